"""Real datasets through the public API: tiny fakes in every supported layout, error cases,
and the real archives from ../shared/data (prepared once per session) when they are there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leakbench.data import datastore, extract
from leakbench.errors import LeakbenchError
from leakbench.registry import Registry

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHARED = Path(os.environ.get("LEAKBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TINY_PARTS = [SHARED / f"tiny-imagenet-200.part{i}.tar.gz" for i in range(3)]
REGISTRY = Registry()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("LEAKBENCH_OFFLINE", "1")  # never reach for the network from a test


def dataset(spec: str):
    return REGISTRY.create("datasets", spec)


def colour(label: int) -> tuple[int, int, int]:
    """A flat colour per class, so a test can tell from the pixels which label an image must have."""
    return (20 * label + 30, 200 - 15 * label, (70 * label) % 256)


def write_image(path: Path, rgb: tuple[int, int, int], size: int | tuple[int, int] = 32, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wh = (size, size) if isinstance(size, int) else size
    image = Image.new("RGB", wh, rgb)
    (image.convert(mode) if mode != "RGB" else image).save(path, quality=95)


def make_cifar_tree(root: Path, train: int = 3, test: int = 2) -> Path:
    """``root/cifar10-jpeg/{train,test}/<class>/NNNN.jpg``, the layout of the shared JPEG archive."""
    for split, n in (("train", train), ("test", test)):
        for label, cls in enumerate(CIFAR_CLASSES):
            for i in range(n):
                write_image(root / "cifar10-jpeg" / split / cls / f"{i:04d}.jpg", colour(label))
    return root / "cifar10-jpeg"


def make_tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def cifar_batches(n: int, seed: int, classes: int = 10, key: str = "labels") -> dict:
    rng = np.random.default_rng(seed)
    return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: [int(v) for v in rng.integers(0, classes, n)],
            "filenames": [f"img_{seed}_{i}.png" for i in range(n)], "batch_label": f"batch {seed}"}


def make_cifar_pickles(root: Path) -> tuple[Path, dict]:
    """A fake official ``cifar-10-python`` tarball: five train batches of 4, a test batch of 6."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": cifar_batches(4, i) for i in range(1, 6)} | {"test_batch": cifar_batches(6, 9)}
    batches["batches.meta"] = {"label_names": CIFAR_CLASSES}
    for name, content in batches.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return make_tar(folder, root / "fake-cifar-10-python.tar.gz"), batches


def load_both(spec: str, root: Path):
    ds = dataset(spec)
    return ds, ds.load("train", root), ds.load("val", root)


def check_contract(split, classes: int, size: int) -> None:
    assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, size, size)
    assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split.images),)
    assert split.num_classes == classes
    assert 0 <= int(split.labels.min()) and int(split.labels.max()) < classes


# --- CIFAR-10 -------------------------------------------------------------------------------------------------

def test_cifar10_jpeg_folder_and_archive_load_with_labels_from_class_folders(tmp_path):
    tree = make_cifar_tree(tmp_path / "src")
    archive = make_tar(tree, tmp_path / "cifar10-jpeg-copy.tar.gz")
    datastore.prepare(dataset("cifar10"), tmp_path / "a", [tree])
    datastore.prepare(dataset("cifar10"), tmp_path / "b", [archive])
    _, train, val = load_both("cifar10", tmp_path / "a")
    check_contract(train, 10, 32)
    assert len(train) == 30 and len(val) == 20 and train.class_names == CIFAR_CLASSES
    for split in (train, val):  # every image carries its class's colour
        expected = torch.tensor([colour(int(y)) for y in split.labels], dtype=torch.float32)
        assert (split.images.float().mean((2, 3)) - expected).abs().max() < 4
    _, train_b, val_b = load_both("cifar10", tmp_path / "b")
    assert torch.equal(train.images, train_b.images) and torch.equal(val.labels, val_b.labels)


def test_cifar10_official_pickles_keep_pixels_order_and_labels(tmp_path):
    archive, batches = make_cifar_pickles(tmp_path)
    datastore.prepare(dataset("cifar10"), tmp_path / "root", [archive])
    _, train, val = load_both("cifar10", tmp_path / "root")
    check_contract(train, 10, 32)
    data = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    assert np.array_equal(train.images.numpy(), data.reshape(-1, 3, 32, 32))
    assert val.labels.tolist() == batches["test_batch"]["labels"]


def test_prepare_twice_reuses_the_cache_and_loading_maps_it_copy_on_write(tmp_path):
    tree = make_cifar_tree(tmp_path / "src")
    first = datastore.prepare(dataset("cifar10"), tmp_path, [tree])
    assert datastore.prepare(dataset("cifar10"), tmp_path, [tree])["created"] == first["created"]
    images = dataset("cifar10").load("train", tmp_path).images
    images.zero_()  # callers may write; the file stays intact
    assert int(dataset("cifar10").load("train", tmp_path).images.max()) > 0


def test_limit_takes_the_first_train_images_round_robin_over_classes_and_keeps_val_whole(tmp_path):
    datastore.prepare(dataset("cifar10"), tmp_path, [make_cifar_tree(tmp_path / "src")])
    ds, train, val = load_both("cifar10:limit=12", tmp_path)
    assert len(train) == 12 and ds.spec() == "cifar10:limit=12"
    assert sorted(torch.bincount(train.labels, minlength=10).tolist()) == [1] * 8 + [2] * 2
    _, full_train, full_val = load_both("cifar10", tmp_path)
    assert len(full_train) == 30 and len(val) == 20  # the evaluation set never shrinks
    assert torch.equal(val.images, full_val.images) and torch.equal(val.labels, full_val.labels)
    assert "first 12 train images" in ds.describe() and "val split is always whole" in ds.describe()
    assert "limit=N trains on the first N train images" in dataset("cifar10").describe()
    assert len(dataset("cifar10:limit=1000").load("train", tmp_path)) == 30  # more than there are: all
    with pytest.raises(LeakbenchError, match="limit"):
        dataset("cifar10:limit=-1")


def test_missing_cifar10_offline_is_one_line_naming_the_root_and_the_command(tmp_path):
    with pytest.raises(LeakbenchError) as info:
        dataset("cifar10").load("train", tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message
    assert f"leakbench data prepare cifar10 --from cifar10-jpeg.tar.gz --data-root {tmp_path}" in message


def test_missing_cifar10_without_network_says_the_download_failed(tmp_path, monkeypatch):
    monkeypatch.delenv("LEAKBENCH_OFFLINE")

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(datastore.socket, "create_connection", no_network)
    with pytest.raises(LeakbenchError, match=r"downloading it failed .*leakbench data prepare cifar10") as info:
        dataset("cifar10").load("val", tmp_path)
    assert "\n" not in str(info.value)


def test_cifar10_downloads_once_through_torchvision_then_loads_from_the_cache(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    fake, _ = make_cifar_pickles(tmp_path / "fake")
    md5 = hashlib.md5(fake.read_bytes()).hexdigest()
    calls = []

    def download_url(url, root, filename, md5_arg):
        calls.append(url)
        assert md5_arg == md5
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / filename).write_bytes(fake.read_bytes())

    cls = type(dataset("cifar10"))
    monkeypatch.delenv("LEAKBENCH_OFFLINE")
    monkeypatch.setattr(tv_utils, "download_url", download_url)
    monkeypatch.setattr(datastore.socket, "create_connection", lambda *a, **k: io.BytesIO())
    monkeypatch.setattr(cls, "known_sources", {})
    monkeypatch.setattr(cls, "downloads", (datastore.Download(("https://example.org/c.tgz",),
                                                              "cifar-10-python.tar.gz", f"md5:{md5}"),))
    assert len(dataset("cifar10").load("train", tmp_path)) == 20
    assert len(dataset("cifar10").load("val", tmp_path)) == 6
    assert calls == ["https://example.org/c.tgz"]
    assert (tmp_path / "downloads" / "cifar10" / "cifar-10-python.tar.gz").exists()


def test_multi_file_downloads_fall_back_to_the_next_mirror(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    rng = np.random.default_rng(1)
    fake = tmp_path / "fake"
    fake.mkdir()
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(fake / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=True)
        write_idx(fake / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n), gz=True)
    tried = []

    def download_url(url, root, filename, md5):
        tried.append(url.split("/")[2])
        if "ossci" in url:
            raise OSError("HTTP Error 503: the first mirror is down")
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / filename).write_bytes((fake / filename).read_bytes())

    cls = type(dataset("mnist"))
    monkeypatch.delenv("LEAKBENCH_OFFLINE")
    monkeypatch.setattr(tv_utils, "download_url", download_url)
    monkeypatch.setattr(datastore.socket, "create_connection", lambda *a, **k: io.BytesIO())
    monkeypatch.setattr(cls, "known_sources", {})
    monkeypatch.setattr(cls, "downloads", tuple(
        datastore.Download(d.urls, d.filename, "md5:" + extract.file_digest(fake / d.filename, "md5"))
        for d in cls.downloads))
    assert len(dataset("mnist").load("train", tmp_path / "root")) == 5
    assert tried == ["ossci-datasets.s3.amazonaws.com", "yann.lecun.com"] * 4


# --- the other torchvision datasets, in their official file formats --------------------------------------------

def test_cifar100_reads_fine_labels_and_class_names_from_meta(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class{i:03d}" for i in range(100)]
    train, test = cifar_batches(7, 1, 100, "fine_labels"), cifar_batches(5, 2, 100, "fine_labels")
    for name, content in (("train", train), ("test", test), ("meta", {"fine_label_names": names})):
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    datastore.prepare(dataset("cifar100"), tmp_path / "root", [make_tar(folder, tmp_path / "c100.tar.gz")])
    _, tr, val = load_both("cifar100", tmp_path / "root")
    check_contract(tr, 100, 32)
    assert tr.class_names == names and val.labels.tolist() == test["fine_labels"]
    assert np.array_equal(val.images.numpy(), test["data"].reshape(-1, 3, 32, 32))


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes((0, 0, 8, array.ndim)) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (path.with_name(path.name + ".gz") if gz else path).write_bytes(gzip.compress(payload) if gz else payload)


@pytest.mark.parametrize(("name", "gz"), [("mnist", True), ("fashion-mnist", False)])
def test_mnist_style_idx_files_become_32px_rgb_with_a_black_border(tmp_path, name, gz):
    rng = np.random.default_rng(0)
    raw = {"train": rng.integers(1, 256, (9, 28, 28)), "t10k": rng.integers(1, 256, (4, 28, 28))}
    labels = {"train": rng.integers(0, 10, 9), "t10k": rng.integers(0, 10, 4)}
    folder = tmp_path / "raw"
    folder.mkdir()
    for prefix in raw:
        write_idx(folder / f"{prefix}-images-idx3-ubyte", raw[prefix], gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels[prefix], gz)
    datastore.prepare(dataset(name), tmp_path / "root", [folder])
    ds, train, val = load_both(name, tmp_path / "root")
    check_contract(train, 10, 32)
    assert np.array_equal(train.images[:, 1, 2:30, 2:30].numpy(), raw["train"])
    assert int(train.images[:, :, :2].max()) == 0 and torch.equal(train.images[:, 0], train.images[:, 2])
    assert val.labels.tolist() == labels["t10k"].tolist() and ds.flip == (name == "fashion-mnist")


def test_svhn_mat_files_map_label_10_to_digit_0(tmp_path):
    sio = pytest.importorskip("scipy.io", reason="SVHN's .mat files need scipy, which is not installed")
    rng = np.random.default_rng(0)
    expected = {}
    for file, n in (("train_32x32.mat", 6), ("test_32x32.mat", 3)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [9], [10], [3], [4]][:n], dtype=np.uint8)
        sio.savemat(tmp_path / file, {"X": x, "y": y})
        expected[file] = (x, y)
    # a folder: files named like the official ones would be checked against the published md5
    datastore.prepare(dataset("svhn"), tmp_path / "root", [tmp_path])
    _, train, _ = load_both("svhn", tmp_path / "root")
    check_contract(train, 10, 32)
    x, y = expected["train_32x32.mat"]
    assert train.labels.tolist() == [0, 1, 9, 0, 3, 4]
    assert np.array_equal(train.images[4].numpy(), x[:, :, :, 4].transpose(2, 0, 1))


# --- Tiny ImageNet ---------------------------------------------------------------------------------------------

TINY_WNIDS = ["n01443537", "n01629819", "n09999999"]
TINY_WORDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander"}


def make_tiny(root: Path, grey: bool = True) -> tuple[Path, list[tuple[str, str]]]:
    """The official layout with 3 classes, 4 train images each, 6 labelled val images (one greyscale)."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(TINY_WNIDS)) + "\n")  # unsorted on purpose
    (base / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in TINY_WORDS.items()) + "n00000001\tentity\n")
    for label, wnid in enumerate(TINY_WNIDS):
        for i in range(4):
            write_image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", colour(label), 64)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    annotations = [(f"val_{i}.JPEG", TINY_WNIDS[(2 * i + 1) % 3]) for i in range(6)]
    for i, (file, wnid) in enumerate(annotations):
        write_image(base / "val" / "images" / file, colour(TINY_WNIDS.index(wnid)), 64,
                    mode="L" if grey and i == 0 else "RGB")
    (base / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in annotations))
    return base, annotations


def tiny_parts(base: Path, out: Path) -> list[Path]:
    """Split like the shared archives: train classes over three parts, val and the lists in the last."""
    paths = [out / f"part{i}.tar.gz" for i in range(3)]
    with tarfile.open(paths[0], "w:gz") as t0, tarfile.open(paths[1], "w:gz") as t1, \
            tarfile.open(paths[2], "w:gz") as t2:
        for tar, wnid in zip((t0, t1, t2), TINY_WNIDS, strict=True):
            tar.add(base / "train" / wnid, arcname=f"tiny-imagenet-200/train/{wnid}")
        for name in ("val", "wnids.txt", "words.txt"):
            t2.add(base / name, arcname=f"tiny-imagenet-200/{name}")
    return paths


def test_tiny_imagenet_from_folder_parts_and_zip_sorted_wnids_words_and_rgb(tmp_path):
    base, annotations = make_tiny(tmp_path / "src")
    parts = tiny_parts(base, tmp_path)
    zipped = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for path in sorted(base.rglob("*")):
            zf.write(path, f"tiny-imagenet-200/{path.relative_to(base)}")
        zf.writestr("tiny-imagenet-200/test/images/test_0.JPEG", b"unlabelled test split: skipped")
    loaded = []
    for name, sources in (("dir", [base]), ("parts", parts), ("zip", [zipped])):
        datastore.prepare(dataset("tiny-imagenet"), tmp_path / name, sources)
        loaded.append(load_both("tiny-imagenet", tmp_path / name)[1:])
    train, val = loaded[0]
    check_contract(train, 3, 64)
    assert train.class_names == ["goldfish, Carassius auratus", "European fire salamander", "n09999999"]
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert val.labels.tolist() == [TINY_WNIDS.index(w) for _, w in annotations]
    grey = val.images[0].int()
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # greyscale became RGB
    for other_train, other_val in loaded[1:]:
        assert torch.equal(train.images, other_train.images) and torch.equal(val.images, other_val.images)


def test_tiny_imagenet_with_a_part_missing_says_to_pass_all_three(tmp_path):
    parts = tiny_parts(make_tiny(tmp_path / "src")[0], tmp_path)
    with pytest.raises(LeakbenchError, match=r"no images for 2 of the 3 classes.*all three") as info:
        datastore.prepare(dataset("tiny-imagenet"), tmp_path / "root", [parts[2]])
    assert "\n" not in str(info.value)
    with pytest.raises(LeakbenchError, match=r"no wnids.txt.*official layout"):
        datastore.prepare(dataset("tiny-imagenet"), tmp_path / "root", parts[:2])


def test_tiny_imagenet_val_images_must_match_the_annotations(tmp_path):
    base, _ = make_tiny(tmp_path / "src")
    (base / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(LeakbenchError, match=r"1 validation images listed in val_annotations.txt are missing"):
        datastore.prepare(dataset("tiny-imagenet"), tmp_path / "root", [base])


# --- bring your own images --------------------------------------------------------------------------------------

def make_folder(root: Path, val: str = "val", sizes: tuple = (24, 24)) -> Path:
    for label, cls in enumerate(["dog", "cat", "bird"]):  # not sorted: classes sort by name
        for i in range(3):
            write_image(root / "train" / cls / f"{i}.png", colour(label), sizes)
        write_image(root / val / cls / "x.jpg", colour(label), sizes)
    return root


def test_imagefolder_sorts_classes_and_normalises_with_train_statistics(tmp_path):
    make_folder(tmp_path, val="test")
    ds, train, val = load_both("imagefolder", tmp_path)
    check_contract(train, 3, 24)
    assert train.class_names == ["bird", "cat", "dog"] and len(val) == 3
    expected = train.images.float().mean((0, 2, 3)) / 255
    assert np.allclose(ds.mean, expected.numpy(), atol=1e-3) and min(ds.std) > 0
    assert dataset("imagefolder:stats=imagenet").mean == (0.485, 0.456, 0.406)
    assert (tmp_path / ".leakbench-cache" / "size-0" / "manifest.json").exists()


def test_imagefolder_rebuilds_when_files_change_and_resizes_on_request(tmp_path):
    make_folder(tmp_path)
    assert len(dataset("imagefolder").load("train", tmp_path)) == 9
    write_image(tmp_path / "train" / "cat" / "new.png", (1, 2, 3), (40, 30))
    with pytest.raises(LeakbenchError, match=r"new.png: it is 40x30 px, expected 24x24.*size=N"):
        dataset("imagefolder").load("train", tmp_path)
    train = dataset(f"imagefolder:size=16,path={tmp_path}").load("train", tmp_path / "elsewhere")
    assert len(train) == 10 and train.images.shape[1:] == (3, 16, 16)


def test_imagefolder_without_train_folder_says_which_layout(tmp_path):
    with pytest.raises(LeakbenchError, match=r"DIR/train/<class>/<image>.*--data-root DIR"):
        dataset("imagefolder").load("train", tmp_path)


# --- errors and safety ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("parallel", [False, True])
def test_corrupt_image_names_the_file_and_leaves_no_cache(tmp_path, monkeypatch, parallel):
    if parallel:  # exercise the process pool on a tiny split
        monkeypatch.setattr(extract, "PARALLEL_MIN", 0)
        monkeypatch.setattr(extract, "CHUNK", 4)
        monkeypatch.setenv("LEAKBENCH_WORKERS", "2")
    tree = make_cifar_tree(tmp_path / "src")
    (tree / "train" / "dog" / "0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    with pytest.raises(LeakbenchError, match=r"cannot decode image .*train/dog/0001.jpg") as info:
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [tree])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "root" / "cifar10").exists()
    assert not list((tmp_path / "root").glob(".cifar10.tmp-*"))


def test_failed_rebuild_keeps_the_previous_cache(tmp_path):
    tree = make_cifar_tree(tmp_path / "src")
    datastore.prepare(dataset("cifar10"), tmp_path / "root", [tree])
    (tree / "test" / "cat" / "0000.jpg").write_bytes(b"garbage")
    with pytest.raises(LeakbenchError, match=r"test/cat/0000\.jpg"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [tree])
    assert len(dataset("cifar10").load("val", tmp_path / "root")) == 20


@pytest.mark.parametrize("member", ["../evil.jpg", "/tmp/evil.jpg", "a/../../evil.jpg"])
def test_archive_member_outside_the_target_is_refused(tmp_path, member):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"x" * 10
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(LeakbenchError, match="outside the target folder"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [archive])
    assert not (tmp_path / "evil.jpg").exists() and not Path("/tmp/evil.jpg").exists()


def test_links_in_archives_are_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("cifar10-jpeg/train/cat/0000.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(LeakbenchError, match="is a link"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [archive])
    zipped = tmp_path / "bad.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(LeakbenchError, match="outside the target folder"):
        datastore.prepare(dataset("tiny-imagenet"), tmp_path / "root", [zipped])


def test_corrupt_zip_member_is_one_line(tmp_path):
    zipped = tmp_path / "tiny.zip"
    payload = os.urandom(4000)
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", payload)
    raw = bytearray(zipped.read_bytes())
    start = raw.index(b"wnids.txt") + len("wnids.txt")  # first bytes of the deflated data
    raw[start:start + 200] = bytes(200)
    zipped.write_bytes(bytes(raw))
    with pytest.raises(LeakbenchError, match=r"cannot read .* as a zip archive"):
        datastore.prepare(dataset("tiny-imagenet"), tmp_path / "root", [zipped])


def test_bad_worker_count_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKBENCH_WORKERS", "many")
    with pytest.raises(LeakbenchError, match="LEAKBENCH_WORKERS must be a whole number, got 'many'"):
        extract.worker_count()


def test_pickles_that_would_run_code_are_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Exploit(), "labels": []}))
    with pytest.raises(LeakbenchError, match=r"refusing to load (posix|nt)\.system"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [folder])


def test_known_archive_names_are_checked_against_their_published_checksum(tmp_path):
    fake = tmp_path / "cifar10-jpeg.tar.gz"
    make_tar(make_cifar_tree(tmp_path / "src"), fake)
    with pytest.raises(LeakbenchError, match=r"checksum mismatch for .*cifar10-jpeg.tar.gz: expected sha256 ff2694"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [fake])


def test_verified_sources_must_hold_the_official_counts(tmp_path, monkeypatch):
    archive = make_tar(make_cifar_tree(tmp_path / "src"), tmp_path / "mine.tar.gz")
    cls = type(dataset("cifar10"))
    monkeypatch.setattr(cls, "known_sources", {"mine.tar.gz": "sha256:" + extract.file_digest(archive)})
    with pytest.raises(LeakbenchError, match="found 30 train images, the official release has 50,000"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [archive])


def test_two_copies_of_a_dataset_in_one_source_are_refused(tmp_path):
    for copy in ("MNIST/raw", "backup"):
        (tmp_path / "src" / copy).mkdir(parents=True)
        write_idx(tmp_path / "src" / copy / "train-images-idx3-ubyte", np.zeros((2, 28, 28)), gz=False)
    with pytest.raises(LeakbenchError, match=r"found train-images-idx3-ubyte in several folders \(MNIST/raw, backup\)"):
        datastore.prepare(dataset("mnist"), tmp_path / "root", [tmp_path / "src"])


def test_wrong_layout_says_which_layouts_were_expected(tmp_path):
    write_image(tmp_path / "src" / "holiday.jpg", (1, 2, 3))
    with pytest.raises(LeakbenchError, match=r"does not hold CIFAR-10: expected cifar-10-batches-py.* or cifar10-jpeg"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [tmp_path / "src"])
    wrong = make_cifar_tree(tmp_path / "other")
    (wrong / "train" / "cat").rename(wrong / "train" / "kitten")
    with pytest.raises(LeakbenchError, match=r"train folders are .*kitten.*expected the 10 classes"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [wrong])
    with pytest.raises(LeakbenchError, match="no such file or folder"):
        datastore.prepare(dataset("cifar10"), tmp_path / "root", [tmp_path / "nope.tar.gz"])


# --- the real Tiny ImageNet archives (CIFAR-10's real archive is covered in test_data_cli.py) ----------------------

@pytest.fixture(scope="session")
def real_tiny(tmp_path_factory):
    if not all(p.exists() for p in TINY_PARTS):
        pytest.skip(f"the Tiny ImageNet part archives are not in {SHARED}")
    root = tmp_path_factory.mktemp("tiny-real")
    return root, datastore.prepare(dataset("tiny-imagenet"), root, TINY_PARTS)


def test_real_tiny_imagenet_counts_shapes_classes_and_rgb(real_tiny):
    root, manifest = real_tiny
    ds, train, val = load_both("tiny-imagenet", root)
    assert (len(train), len(val)) == (100_000, 10_000) and manifest["source"]["verified"]
    check_contract(train, 200, 64)
    check_contract(val, 200, 64)
    assert train.class_names[0] == "goldfish, Carassius auratus"
    assert torch.bincount(train.labels).tolist() == [500] * 200 and torch.bincount(val.labels).tolist() == [50] * 200
    grey = (val.images[:, 0] == val.images[:, 1]).all((1, 2)) & (val.images[:, 1] == val.images[:, 2]).all((1, 2))
    assert 50 < int(grey.sum()) < 1000  # ~2% of the JPEGs are greyscale; they are stored as 3 equal channels
    measured = manifest["splits"]["train"]  # from a subsample of ~8k images
    assert np.allclose(ds.mean, measured["mean"], atol=5e-3) and np.allclose(ds.std, measured["std"], atol=5e-3)


def test_real_tiny_imagenet_val_labels_and_pixels_follow_the_annotations(real_tiny):
    root, _ = real_tiny
    with tarfile.open(TINY_PARTS[2]) as tar:
        annotations = tar.extractfile("tiny-imagenet-200/val/val_annotations.txt").read().decode().splitlines()
        wnids = sorted(tar.extractfile("tiny-imagenet-200/wnids.txt").read().decode().split())
        picks = [0, 1, 4321, 9999]
        files = {i: tar.extractfile(f"tiny-imagenet-200/val/images/{annotations[i].split()[0]}").read() for i in picks}
    val = dataset("tiny-imagenet").load("val", root)
    assert val.labels.tolist() == [wnids.index(line.split("\t")[1]) for line in annotations]
    for i, data in files.items():
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1).astype(int)
        assert np.abs(val.images[i].numpy().astype(int) - expected).max() <= 1
