"""Get pixels out of dataset sources safely: archives, plain files and folders, checksums, decoding.

Archives are never unpacked onto disk. Each member is checked (no absolute or ``..``
paths, no links, no devices) and the files a dataset needs are read into memory, so a
hostile archive cannot write anywhere and a half-read one leaves nothing behind. Images
are then decoded in parallel worker processes straight into the cache's array files
(see :mod:`leakbench.data.datastore`, which owns the cache).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import re
import stat
import sys
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from leakbench.errors import LeakbenchError

if TYPE_CHECKING:
    import numpy as np

PARALLEL_MIN = 4096  # fewer images than this decode in-process: starting workers costs more
CHUNK = 1024  # images per decode task
_BLOBS: list = []  # the split being decoded; forked workers inherit it instead of receiving it by pipe
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_DRIVE = re.compile(r"^[A-Za-z]:")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks so large archives cost no memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """sha256 over (path, size, mtime) of every visible file: notices edits without reading bytes."""
    rows = [[name, st.st_size, st.st_mtime_ns] for name, path in _walk(folder) for st in [path.stat()]]
    return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()


def source_key(paths: list[Path], known: dict[str, str]) -> tuple[str, list[str]]:
    """One checksum for a list of sources, and which files matched a published checksum.

    ``known`` maps a file name to ``"sha256:<hex>"`` or ``"md5:<hex>"``; a file with that
    name and another digest is refused (a truncated download or a different release).
    """
    parts, verified = [], []
    for path in paths:
        if path.is_dir():
            parts.append([path.name, "folder:" + folder_fingerprint(path)])
            continue
        sha = file_digest(path)
        expected = known.get(path.name)
        if expected:
            algorithm, _, want = expected.partition(":")
            got = sha if algorithm == "sha256" else file_digest(path, algorithm)
            if got != want:
                raise LeakbenchError(f"checksum mismatch for {path}: expected {algorithm} {want}, got {got}; "
                                     "the file is incomplete or a different release, copy or download it again")
            verified.append(path.name)
        parts.append([path.name, "sha256:" + sha])
    return "sha256:" + hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest(), verified


@dataclass
class Source:
    """Files of one or more sources by relative posix path: bytes (from archives) or paths on disk."""

    origins: list[Path]
    entries: dict[str, bytes | Path] = field(default_factory=dict)
    where: dict[str, Path] = field(default_factory=dict)

    def add(self, name: str, data: bytes | Path, origin: Path) -> None:
        if name in self.entries and self.where[name] != origin and self.read(name) != _read(data):
            raise LeakbenchError(f"{name} differs between {self.where[name]} and {origin}; pass one of them")
        self.entries[name], self.where[name] = data, origin

    def read(self, name: str) -> bytes:
        return _read(self.entries[name])

    def names(self) -> list[str]:
        return sorted(self.entries)

    def label(self, name: str) -> str:
        """Where a file came from, for error messages: ``archive.tar.gz:member`` or a path."""
        origin, data = self.where[name], self.entries[name]
        return str(data) if isinstance(data, Path) else f"{origin}:{name}"

    def find(self, *basenames: str) -> list[str]:
        """Paths whose last component is one of ``basenames`` (case-sensitive), sorted."""
        wanted = set(basenames)
        return [n for n in self.names() if n.rsplit("/", 1)[-1] in wanted]

    def find_one(self, *basenames: str) -> str | None:
        """The single file named one of ``basenames``; refuses two copies in different folders."""
        found = self.find(*basenames)
        folders = sorted({n.rpartition("/")[0] for n in found})
        if len(folders) > 1:
            raise LeakbenchError(f"found {basenames[0]} in several folders ({', '.join(folders[:3])}); "
                                 "pass the folder or archive of one dataset only")
        return found[0] if found else None


def open_sources(paths: Iterable[Path | str], want: Callable[[str], bool] = lambda name: True) -> Source:
    """Index folders, plain files and archives; keep in memory only archive members ``want`` accepts."""
    paths = [Path(p).expanduser() for p in paths]
    source = Source(paths)
    for path in paths:
        if not path.exists():
            raise LeakbenchError(f"--from {path}: no such file or folder")
        if path.is_dir():
            for name, file in _walk(path):
                source.add(name, file, path)
        elif path.name.lower().endswith(TAR_SUFFIXES):
            _read_tar(path, source, want)
        elif path.name.lower().endswith(".zip"):
            _read_zip(path, source, want)
        else:
            source.add(path.name, path, path)
    return source


def _walk(folder: Path) -> Iterable[tuple[str, Path]]:
    """Visible files under ``folder`` (hidden names and caches skipped), as (relative name, path)."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.startswith("."):
                path = Path(dirpath, filename)
                yield path.relative_to(folder).as_posix(), path


def _read(data: bytes | Path) -> bytes:
    return data if isinstance(data, bytes) else data.read_bytes()


def check_member_name(archive: Path, name: str) -> str:
    """The member's normalised relative name; refuses absolute paths, drives and ``..``."""
    clean = name.replace("\\", "/")
    parts = [p for p in PurePosixPath(clean).parts if p not in (".", "")]
    if clean.startswith("/") or _DRIVE.match(clean) or ".." in parts:
        raise LeakbenchError(f"refusing {archive}: member '{name}' would land outside the target folder "
                             "(absolute or '..' path); the archive is damaged or malicious")
    return "/".join(parts)


def _read_tar(archive: Path, source: Source, want: Callable[[str], bool]) -> None:
    try:
        with tarfile.open(archive, "r|*") as tar:  # streaming: one pass over the compressed file
            for member in tar:
                name = check_member_name(archive, member.name)
                if member.issym() or member.islnk():
                    raise LeakbenchError(f"refusing {archive}: member '{member.name}' is a link "
                                         f"(to '{member.linkname}'); dataset archives hold plain files only")
                if not (member.isfile() or member.isdir()):
                    raise LeakbenchError(f"refusing {archive}: member '{member.name}' is a device or pipe")
                if member.isfile() and name and want(name):
                    fh = tar.extractfile(member)
                    source.add(name, fh.read() if fh else b"", archive)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LeakbenchError(f"cannot read {archive} as a tar archive ({exc}); copy or download it again") from exc


def _read_zip(archive: Path, source: Source, want: Callable[[str], bool]) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = check_member_name(archive, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise LeakbenchError(f"refusing {archive}: member '{info.filename}' is a link; "
                                         "dataset archives hold plain files only")
                if not info.is_dir() and name and want(name):
                    source.add(name, zf.read(info), archive)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:  # zlib: corrupt member
        raise LeakbenchError(f"cannot read {archive} as a zip archive ({exc}); copy or download it again") from exc


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: a dataset file cannot run code."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def safe_unpickle(data: bytes, what: str) -> object:
    """Load a CIFAR-style pickle (Python 2 era, hence latin1) without executing arbitrary code."""
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        raise LeakbenchError(f"cannot read {what} as a CIFAR pickle ({exc}); copy or download it again") from exc


class BadImage(Exception):
    """A file that would not decode, or has the wrong size: (index in the split, reason)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(index, reason)


@functools.cache
def _jpeg_decoder() -> Callable | None:
    """torchvision's libjpeg-turbo decoder, or None where torchvision no longer ships it.

    torchvision 0.29 deprecates its decoders in favour of TorchCodec; PIL (3x slower on
    64 px images, same pixels) takes over if they go.
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def decode_image(data: bytes, resize: int = 0) -> np.ndarray:
    """uint8 ``[3,H,W]`` RGB from encoded bytes (greyscale/CMYK converted); optionally resized.

    JPEGs go through torchvision's decoder when it is there; anything else, or a JPEG it
    refuses, through PIL. ``resize`` scales the shorter side to that size and crops the
    centre square (torchvision's eval transform).
    """
    import numpy as np

    if not resize and data[:3] == b"\xff\xd8\xff" and (decode_jpeg := _jpeg_decoder()) is not None:
        import torch

        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)).numpy()
        except RuntimeError:
            pass
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    if resize:
        scale = resize / min(rgb.size)
        w, h = max(resize, round(rgb.width * scale)), max(resize, round(rgb.height * scale))
        left, top = (w - resize) // 2, (h - resize) // 2
        rgb = rgb.resize((w, h), Image.Resampling.BICUBIC).crop((left, top, left + resize, top + resize))
    return np.asarray(rgb).transpose(2, 0, 1)


def decode_chunk(task: tuple) -> int:
    """Worker: decode images ``start:stop`` and write them into the split's .npy file in place."""
    import numpy as np

    path, start, stop, (height, width), resize, blobs = task
    blobs = [b if isinstance(b, bytes) else _read_file(b, start + i) for i, b in
             enumerate(_BLOBS[start:stop] if blobs is None else blobs)]
    chunk = np.empty((stop - start, 3, height, width), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 warns on every decode
        images = _decode_jpegs(blobs) if not resize else None
        for i, blob in enumerate(blobs):
            try:
                image = images[i] if images is not None else decode_image(blob, resize)
            except Exception as exc:
                raise BadImage(start + i, f"{type(exc).__name__}: {exc}") from None
            if image.shape[1:] != (height, width):
                raise BadImage(start + i, f"it is {image.shape[2]}x{image.shape[1]} px, expected {width}x{height}"
                                + ("" if resize else " (image folders: set size=N to resize)"))
            chunk[i] = image
    out = np.load(path, mmap_mode="r+")
    out[start:stop] = chunk
    out.flush()
    return stop - start


def _read_file(path: Path, index: int) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadImage(index, exc.strerror or str(exc)) from None


def _decode_jpegs(blobs: list[bytes]) -> list | None:
    """All of a chunk in one torchvision call (about 15% faster than one call per image);
    None when the chunk holds anything but JPEGs or one fails, so each image gets its own try."""
    decode_jpeg = _jpeg_decoder()
    if decode_jpeg is None or not all(b[:3] == b"\xff\xd8\xff" for b in blobs):
        return None
    import torch

    try:
        return [t.numpy() for t in decode_jpeg([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs])]
    except RuntimeError:
        return None


def decode_first(source: Source, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(source.read(name))
    except Exception as exc:
        raise LeakbenchError(f"cannot decode image {source.label(name)}: {type(exc).__name__}: {exc}") from None


def worker_count() -> int:
    """``$LEAKBENCH_WORKERS``, else the usable CPU cores (at most 8)."""
    if os.environ.get("LEAKBENCH_WORKERS"):
        try:
            return max(1, int(os.environ["LEAKBENCH_WORKERS"]))
        except ValueError:
            raise LeakbenchError(f"LEAKBENCH_WORKERS must be a whole number, got "
                                 f"'{os.environ['LEAKBENCH_WORKERS']}'") from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, cores)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one decoder per core; also keeps forked children clear of OpenMP pools


def decode_chunks(path: Path, blobs: list[bytes | Path], shape: tuple[int, int], resize: int = 0) -> Iterator[int]:
    """Decode ``blobs`` into the .npy at ``path`` in chunks; yield how many images each chunk held.

    Large splits go to a process pool. On Linux the workers are forked: they inherit torch
    already imported (a spawned worker spends seconds importing it) and the encoded bytes,
    so only chunk bounds travel through the pipes.
    """
    global _BLOBS
    bounds = [(start, min(start + CHUNK, len(blobs))) for start in range(0, len(blobs), CHUNK)]
    workers = worker_count()
    if workers < 2 or len(blobs) < PARALLEL_MIN:
        _BLOBS = blobs
        try:
            yield from (decode_chunk((str(path), a, b, shape, resize, None)) for a, b in bounds)
        finally:
            _BLOBS = []
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    _jpeg_decoder()  # import torchvision once here, so forked workers start with it

    fork = sys.platform == "linux"
    context = multiprocessing.get_context("fork" if fork else "spawn")
    _BLOBS = blobs if fork else []
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
            futures = [pool.submit(decode_chunk, (str(path), a, b, shape, resize, None if fork else blobs[a:b]))
                       for a, b in bounds]
            try:
                for future in as_completed(futures):
                    yield future.result()
            finally:
                for future in futures:
                    future.cancel()
    finally:
        _BLOBS = []
