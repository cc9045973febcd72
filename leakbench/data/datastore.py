"""Prepared datasets: decoded once into a memory-mapped uint8 cache per split, keyed by source checksum.

Layout under the data root::

    <root>/<dataset>/manifest.json            classes, counts, image size, source files and checksum
    <root>/<dataset>/{train,val}.images.npy   uint8 [N,3,H,W], opened with mmap (copy-on-write)
    <root>/<dataset>/{train,val}.labels.npy   int64 [N]
    <root>/<dataset>/{train,val}.names.txt    the source file of each image, where there is one
    <root>/downloads/<dataset>/               official files fetched through torchvision

JPEGs are decoded in parallel worker processes on the first prepare, never again per
epoch: a later load only maps the arrays. A build writes into a hidden temporary folder
that is renamed into place at the end, so an interrupted prepare never leaves a cache
that looks complete, and a file lock keeps two processes from building the same cache.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from leakbench.data.extract import (
    BadImage,
    Source,
    decode_chunks,
    decode_first,
    file_digest,
    open_sources,
    source_key,
)
from leakbench.errors import LeakbenchError
from leakbench.types import Dataset, ImageSet

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
FORMAT = 1  # bump when the cache layout changes: older caches then count as missing
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Download:
    """An official file torchvision can fetch: mirror URLs, file name, ``md5:<hex>``."""

    urls: tuple[str, ...]
    filename: str
    checksum: str


@dataclass
class CachedDataset(Dataset):
    """Base for datasets read from files: subclasses parse a Source into the cache in ``build``."""

    title: ClassVar[str] = ""
    counts: ClassVar[dict[str, int]] = {}  # official split sizes, enforced when the source checksum is known
    known_sources: ClassVar[dict[str, str]] = {}  # file name -> "sha256:<hex>" or "md5:<hex>"
    downloads: ClassVar[tuple[Download, ...]] = ()
    from_example: ClassVar[str] = ""  # what to pass to --from, shown in messages
    from_also: ClassVar[str] = ""  # other accepted sources, shown in messages
    in_place: ClassVar[bool] = False  # True: read where the files lie (in_place_sources), no fixed cache
    notes: ClassVar[str] = ""  # for describe(): splits, labels, preprocessing
    limit: int = 0  # train on the first N train images (0: all); never shrinks the val split

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"limit must be 0 (all images) or a positive count, got {self.limit}")

    def wanted(self, name: str) -> bool:
        """Which archive members to keep in memory while reading a source."""
        return True

    def build(self, source: Source, out: CacheWriter) -> None:
        """Find this dataset's files in ``source`` and write both splits into ``out``."""
        raise NotImplementedError

    def cache_dir(self, root: Path) -> Path:
        return Path(root) / self.name

    def describe(self) -> str:
        if self.limit:
            subset = (f"trained on only the first {self.limit} train images, round-robin over the classes; "
                      "the val split is always whole")
        else:
            subset = "limit=N trains on the first N train images, round-robin over the classes; val stays whole"
        return "; ".join(filter(None, [self.notes, subset]))

    def identity(self, root: Path) -> dict[str, Any]:
        """The prepared cache's source checksum: the JPEG copy and the official pickles of one
        dataset are different data, so different experiments ("unprepared" before a prepare)."""
        manifest = read_manifest(self.cache_dir(root))
        return {"source": manifest["source"]["key"] if manifest else "unprepared"}

    def use_manifest(self, manifest: dict[str, Any]) -> None:
        """Called on every load with the cache's manifest (e.g. to adopt its measured mean/std)."""

    def in_place_sources(self, root: Path) -> list[Path]:
        """In-place datasets: the sources under ``root``, re-checked on every load and rebuilt when changed."""
        raise NotImplementedError

    def load(self, split: str, root: Path) -> ImageSet:
        """Map the prepared split (preparing or downloading it first if needed).

        ``limit`` picks a subset of the train split only: ``val`` (the official test set) is always
        whole, so runs on a training subset are scored on the same images as full runs.
        """
        import torch

        if split not in SPLITS:
            raise LeakbenchError(f"dataset '{self.name}' has splits {', '.join(SPLITS)}, not '{split}'")
        manifest = ensure_prepared(self, root)
        self.use_manifest(manifest)
        images, labels = open_split(self.cache_dir(root), split, manifest)
        if split == "train" and self.limit and self.limit < len(labels):
            keep = stratified_first(labels, self.limit)
            images, labels = images[keep], labels[keep]
        return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), list(manifest["classes"]))


def stratified_first(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` images taken round-robin over classes, each class in cache order; sorted.

    Caches built from class folders are sorted by class, so a plain first-N would hold one class.
    """
    import numpy as np

    order = np.argsort(labels, kind="stable")
    first_of_class = np.searchsorted(labels[order], labels[order], side="left")
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - first_of_class
    return np.sort(np.lexsort((np.arange(len(labels)), rank))[:n])


def channel_stats(images: np.ndarray, sample: int = 8192) -> dict[str, list[float]]:
    """Per-channel mean and std in [0, 1] over every k-th image, about ``sample`` of them.

    Exact for splits up to ``2 * sample`` images; on larger ones the subsample moves the
    values by up to about 3e-3 and takes a fraction of a second instead of several.
    """
    import numpy as np

    step = max(1, len(images) // sample)
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for start in range(0, len(images), 256 * step):
        flat = np.asarray(images[start:start + 256 * step:step]).reshape(-1, 3, images[0][0].size)
        values = flat.transpose(1, 0, 2).reshape(3, -1).astype(np.float32)
        total += values.sum(1, dtype=np.float64)
        squares += np.einsum("ij,ij->i", values, values, dtype=np.float64)
        count += values.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0))
    return {"mean": [round(float(m) / 255, 4) for m in mean], "std": [round(float(s) / 255, 4) for s in std]}


class CacheWriter:
    """Collects the splits of one build in a hidden folder; ``commit`` renames it into place."""

    def __init__(self, final: Path, title: str, expected: dict[str, int] | None = None) -> None:
        self.final, self.title, self.expected = final, title, expected or {}
        self.tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.classes: list[str] = []
        self.layout = ""
        self.splits: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # after commit it is already gone

    def _check_count(self, split: str, n: int) -> None:
        if n == 0:
            raise LeakbenchError(f"{self.title}: the source has no {split} images")
        if split in self.expected and n != self.expected[split]:
            raise LeakbenchError(f"{self.title}: found {n:,} {split} images, the official release has "
                                 f"{self.expected[split]:,}; the source is incomplete, copy or download it again")

    def put(self, split: str, images: np.ndarray, labels: Any, names: list[str] | None = None) -> None:
        """Store an already-decoded split: uint8 ``[N,3,H,W]`` images and their labels."""
        import numpy as np

        self._check_count(split, len(images))
        np.save(self.tmp / f"{split}.images.npy", np.ascontiguousarray(images, dtype=np.uint8))
        self._finish(split, labels, names)

    def decode(self, split: str, source: Source, names: list[str], labels: Any,
               size: int | None = None, resize: int = 0) -> None:
        """Decode image files into the split, in parallel; all must be ``size`` px square unless resized."""
        import numpy as np
        from tqdm import tqdm

        self._check_count(split, len(names))
        if resize:
            height = width = resize
        elif size:
            height = width = size
        else:  # an image folder of unknown size: the first image sets it
            height, width = decode_first(source, names[0]).shape[1:]
        path = self.tmp / f"{split}.images.npy"
        # allocate the file; the decoders open it themselves and write their rows in place
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(names), 3, height, width)).flush()
        with tqdm(total=len(names), unit="img", desc=f"decoding {split}", disable=None, leave=False) as bar:
            try:
                for count in decode_chunks(path, [source.entries[n] for n in names], (height, width), resize):
                    bar.update(count)
            except BadImage as bad:
                index, reason = bad.args
                raise LeakbenchError(f"cannot decode image {source.label(names[index])}: {reason}; "
                                     "replace or delete that file and prepare again") from None
        self._finish(split, labels, names)

    def _finish(self, split: str, labels: Any, names: list[str] | None) -> None:
        import numpy as np

        labels = np.asarray(labels, dtype=np.int64)
        np.save(self.tmp / f"{split}.labels.npy", labels)
        if names is not None:
            (self.tmp / f"{split}.names.txt").write_text("\n".join(names) + "\n")
        images = np.load(self.tmp / f"{split}.images.npy", mmap_mode="r")
        self.splits[split] = {"count": len(images), "shape": list(images.shape[1:]), **channel_stats(images)}

    def commit(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Check the splits, write the manifest last, and swap the folder into place."""
        import numpy as np

        for split in SPLITS:
            if split not in self.splits:
                raise LeakbenchError(f"{self.title}: the source has no {split} split")
            labels = np.load(self.tmp / f"{split}.labels.npy")
            if len(labels) != self.splits[split]["count"] or labels.min() < 0 or labels.max() >= len(self.classes):
                raise LeakbenchError(f"{self.title}: {split} labels do not match the {len(self.classes)} classes")
        manifest = {"format": FORMAT, "title": self.title, "layout": self.layout, "classes": self.classes,
                    "splits": self.splits, **extra, "created": dt.datetime.now(dt.timezone.utc).isoformat()}
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        shutil.rmtree(old, ignore_errors=True)
        return manifest


def image_tree(source: Source, title: str, layout: str) -> dict[str, list[tuple[str, str]]]:
    """``{split: [(file, class), ...]}`` of a ``train/<class>/*`` + ``val/<class>/*`` (or ``test/``) tree.

    The tree may sit under one prefix (``cifar10-jpeg/train/...``); files sort by class, then name.
    """
    found: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for name in source.names():
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3] in ("train", "val", "test") and name.lower().endswith(IMAGE_SUFFIXES):
            found.setdefault("/".join(parts[:-3]), {}).setdefault(parts[-3], []).append((name, parts[-2]))
    bases = sorted(base for base, splits in found.items() if "train" in splits)
    if not bases:
        raise LeakbenchError(f"{title}: no train/<class>/<image> files in {', '.join(map(str, source.origins))}; "
                             f"expected {layout}")
    if len(bases) > 1:
        raise LeakbenchError(f"{title}: several image trees ({', '.join(b or '.' for b in bases[:3])}); "
                             "pass the folder or archive of one dataset only")
    splits = found[bases[0]]
    val = "val" if "val" in splits else "test" if "test" in splits else None
    if val is None:
        raise LeakbenchError(f"{title}: {bases[0] or 'the source'} has train/ but no val/ or test/ folder; "
                             f"expected {layout}")
    return {"train": sorted(splits["train"], key=lambda t: (t[1], t[0])),
            "val": sorted(splits[val], key=lambda t: (t[1], t[0]))}


def read_manifest(cache: Path) -> dict[str, Any] | None:
    """The manifest of a complete cache of the current format, else None (missing or stale)."""
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != FORMAT:
        return None
    return manifest


def open_split(cache: Path, split: str, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a split (copy-on-write: callers may modify the arrays, the file stays intact)."""
    import numpy as np

    try:
        images = np.load(cache / f"{split}.images.npy", mmap_mode="c")
        labels = np.load(cache / f"{split}.labels.npy")
    except (OSError, ValueError) as exc:
        raise LeakbenchError(f"the cache in {cache} is damaged ({exc}); prepare it again with --force") from None
    info = manifest["splits"][split]
    if len(images) != info["count"] or len(labels) != info["count"] or list(images.shape[1:]) != info["shape"]:
        raise LeakbenchError(f"the cache in {cache} does not match its manifest; prepare it again with --force")
    return images, labels


def prepare(dataset: CachedDataset, root: Path, paths: list[Path], force: bool = False) -> dict[str, Any]:
    """Verify the sources, decode them into the cache and return its manifest (no-op if already built)."""
    from filelock import FileLock

    from leakbench import __version__

    paths = [Path(p).expanduser().resolve() for p in paths]
    for path in paths:
        if not path.exists():
            raise LeakbenchError(f"--from {path}: no such file or folder")
    key, verified = source_key(paths, dataset.known_sources)
    cache = dataset.cache_dir(root)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(cache.parent / f".{cache.name}.lock"))
        lock.acquire()
    except OSError as exc:
        raise LeakbenchError(f"cannot write to {cache.parent} ({exc.strerror}); pass another --data-root") from None
    try:
        current = read_manifest(cache)
        if current and current["source"]["key"] == key and not force:
            return current
        for pattern in (f".{cache.name}.tmp-*", f".{cache.name}.old-*"):  # crashed builds (we hold the lock)
            for stale in cache.parent.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)
        start = time.perf_counter()
        source = open_sources(paths, dataset.wanted)
        official = bool(verified) and len(verified) == len(paths)
        with CacheWriter(cache, dataset.title, dataset.counts if official else None) as out:
            dataset.build(source, out)
            return out.commit({"dataset": dataset.name, "leakbench": __version__,
                               "source": {"files": [str(p) for p in paths], "key": key, "verified": verified},
                               "seconds": round(time.perf_counter() - start, 2)})
    except OSError as exc:  # a full disk or an unreadable source file while building
        raise LeakbenchError(f"cannot build the {dataset.name} cache in {cache.parent} ({exc}); "
                             "free some space, check the source files, or pass another --data-root") from None
    finally:
        lock.release()


def ensure_prepared(dataset: CachedDataset, root: Path) -> dict[str, Any]:
    """The manifest of a usable cache: rebuilt if in-place sources changed, downloaded if possible."""
    manifest = read_manifest(dataset.cache_dir(root))
    if dataset.in_place:
        sources = dataset.in_place_sources(root)
        if manifest and manifest["source"]["key"] == source_key(sources, {})[0]:
            return manifest
        return prepare(dataset, root, sources)
    if manifest:
        return manifest
    return prepare(dataset, root, download(dataset, root))


def prepare_hint(dataset: CachedDataset, root: Path) -> str:
    also = f" (--from also takes {dataset.from_also})" if dataset.from_also else ""
    return f"run `leakbench data prepare {dataset.name} --from {dataset.from_example} --data-root {root}`{also}"


def download(dataset: CachedDataset, root: Path) -> list[Path]:
    """Fetch the official files through torchvision into ``<root>/downloads/<name>`` (once)."""
    missing = f"{dataset.title} is not prepared in {dataset.cache_dir(root)}"
    if not dataset.downloads:
        raise LeakbenchError(f"{missing}; {prepare_hint(dataset, root)}")
    if os.environ.get("LEAKBENCH_OFFLINE"):
        raise LeakbenchError(f"{missing} and LEAKBENCH_OFFLINE is set; {prepare_hint(dataset, root)}")
    from filelock import FileLock
    from torchvision.datasets.utils import download_url

    target = Path(root) / "downloads" / dataset.name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LeakbenchError(f"{missing} and cannot be downloaded into {target} ({exc.strerror}); "
                             f"{prepare_hint(dataset, root)}") from None
    files = []
    with FileLock(str(target / ".download.lock")):  # two runs starting at once download once
        for item in dataset.downloads:
            path = target / item.filename
            algorithm, _, want = item.checksum.partition(":")
            if not (path.exists() and file_digest(path, algorithm) == want):
                errors = []
                for url in item.urls:
                    parts = urllib.parse.urlsplit(url)
                    try:
                        port = parts.port or (443 if parts.scheme == "https" else 80)
                        socket.create_connection((parts.hostname, port), timeout=10).close()  # fail fast offline
                        download_url(url, target, item.filename, want if algorithm == "md5" else None)
                        break
                    except (OSError, RuntimeError) as exc:
                        errors.append(f"{parts.hostname}: {exc}")
                else:
                    raise LeakbenchError(f"{missing} and downloading it failed ({'; '.join(errors)}); "
                                         f"{prepare_hint(dataset, root)}")
            files.append(path)
    return files


def cache_status(dataset: CachedDataset, root: Path) -> dict[str, Any]:
    """One row of ``leakbench data list``: state, counts, image size, bytes on disk, source."""
    cache = dataset.cache_dir(root)
    manifest = read_manifest(cache)
    row: dict[str, Any] = {"dataset": dataset.name, "path": str(cache)}
    if manifest is None:
        how = "download or --from " if dataset.downloads else "--from "
        return {**row, "state": "missing", "source": how + dataset.from_example}
    splits = manifest["splits"]
    files = [Path(f).name for f in manifest["source"]["files"]]
    return {**row, "state": "prepared", **{split: splits[split]["count"] for split in SPLITS},
            "image": "x".join(map(str, splits["train"]["shape"][1:])),
            "bytes": sum(f.stat().st_size for f in cache.iterdir() if f.is_file()),
            "source": ", ".join(files) + (" (checksum verified)" if manifest["source"]["verified"] else "")}
