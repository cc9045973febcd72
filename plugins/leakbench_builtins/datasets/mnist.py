"""MNIST and Fashion-MNIST from the official idx files, padded to 32x32 RGB."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from leakbench import hookimpl
from leakbench.data.datastore import CachedDataset, CacheWriter, Download
from leakbench.data.extract import Source
from leakbench.errors import LeakbenchError

if TYPE_CHECKING:
    import numpy as np

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
LAYOUT = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz or not)"


def _downloads(mirrors: tuple[str, ...], md5s: tuple[str, ...]) -> tuple[Download, ...]:
    names = [f"{n}.gz" for pair in FILES.values() for n in pair]
    return tuple(Download(tuple(m + n for m in mirrors), n, "md5:" + md5) for n, md5 in zip(names, md5s, strict=True))


@dataclass
class Mnist(CachedDataset):
    """MNIST: 60,000 train / 10,000 val handwritten digits, 28x28 grey padded to 32x32 RGB."""

    name: ClassVar[str] = "mnist"
    title: ClassVar[str] = "MNIST"
    # the usual 28x28 statistics (0.1307, 0.3081) rescaled for the 2-pixel black border
    mean: ClassVar[tuple[float, float, float]] = (0.1001,) * 3
    std: ClassVar[tuple[float, float, float]] = (0.2752,) * 3
    crop_padding: ClassVar[int] = 2
    flip: ClassVar[bool] = False  # digits are not mirror-symmetric
    default_recipe: ClassVar[str] = "paper"
    notes: ClassVar[str] = ("official test set as the val split; 28x28 padded with 2 black pixels to 32x32 and "
                            "copied to 3 channels, so CIFAR-sized leaks and backbones apply unchanged")
    counts: ClassVar[dict[str, int]] = {"train": 60_000, "val": 10_000}
    class_names: ClassVar[tuple[str, ...]] = tuple(str(d) for d in range(10))
    # torchvision.datasets.MNIST.mirrors / .resources
    downloads: ClassVar[tuple[Download, ...]] = _downloads(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
         "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))
    known_sources: ClassVar[dict[str, str]] = {d.filename: d.checksum for d in downloads}
    from_example: ClassVar[str] = "DIR"
    from_also: ClassVar[str] = f"a folder or archive holding {LAYOUT}, or the four files (all after one --from)"

    def build(self, source: Source, out: CacheWriter) -> None:
        import numpy as np

        out.classes = list(self.class_names)
        out.layout = "idx"
        for split, (image_file, label_file) in FILES.items():
            raw = _idx(source, self.title, image_file, 3)
            labels = _idx(source, self.title, label_file, 1)
            if len(raw) != len(labels) or raw.shape[1:] != (28, 28):
                raise LeakbenchError(f"{self.title}: {image_file} holds {raw.shape} pixels for {len(labels)} "
                                     "labels; expected [N, 28, 28] and N labels")
            images = np.zeros((len(raw), 3, 32, 32), np.uint8)
            images[:, :, 2:30, 2:30] = raw[:, None]  # pad, not resize: pixels stay exact
            out.put(split, images, labels)


@dataclass
class FashionMnist(Mnist):
    """Fashion-MNIST: 60,000 train / 10,000 val clothing photos, 28x28 grey padded to 32x32 RGB."""

    name: ClassVar[str] = "fashion-mnist"
    title: ClassVar[str] = "Fashion-MNIST"
    # the usual 28x28 statistics (0.2860, 0.3530) rescaled for the 2-pixel black border
    mean: ClassVar[tuple[float, float, float]] = (0.2190,) * 3
    std: ClassVar[tuple[float, float, float]] = (0.3318,) * 3
    flip: ClassVar[bool] = True  # garments are roughly mirror-symmetric
    class_names: ClassVar[tuple[str, ...]] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                              "Shirt", "Sneaker", "Bag", "Ankle boot")
    # torchvision.datasets.FashionMNIST.mirrors / .resources
    downloads: ClassVar[tuple[Download, ...]] = _downloads(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))
    known_sources: ClassVar[dict[str, str]] = {d.filename: d.checksum for d in downloads}


def _idx(source: Source, title: str, file: str, ndim: int) -> np.ndarray:
    """An idx array of unsigned bytes (the format's type 0x08), gzipped or not."""
    import numpy as np

    found = source.find_one(file, file + ".gz")
    if found is None:
        raise LeakbenchError(f"{title}: {file} is missing from {', '.join(map(str, source.origins))}; "
                             f"expected {LAYOUT}")
    data = source.read(found)
    try:
        data = gzip.decompress(data) if found.endswith(".gz") else data
    except (OSError, EOFError, zlib.error) as exc:
        raise LeakbenchError(f"{title}: cannot unzip {source.label(found)} ({exc})") from None
    if len(data) < 4 + 4 * ndim or data[:4] != bytes((0, 0, 8, ndim)):
        raise LeakbenchError(f"{title}: {source.label(found)} is not an idx file of {ndim}-d unsigned bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise LeakbenchError(f"{title}: {source.label(found)} is truncated ({body.size} of {np.prod(shape)} bytes)")
    return body.reshape(shape)


@hookimpl
def register_datasets():
    return [Mnist, FashionMnist]
