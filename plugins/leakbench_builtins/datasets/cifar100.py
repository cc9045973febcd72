"""CIFAR-100 from the official python pickles (downloaded by torchvision when online)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import hookimpl
from leakbench.data.datastore import CachedDataset, CacheWriter, Download
from leakbench.data.extract import Source, safe_unpickle
from leakbench.errors import LeakbenchError
from leakbench_builtins.datasets.cifar10 import read_pickles

LAYOUT = "cifar-100-python/{train,test,meta} (official python version)"
MD5 = "md5:eb9058c3a382ffc7106e4002c42a8d85"


@dataclass
class Cifar100(CachedDataset):
    """CIFAR-100: 50,000 train / 10,000 val 32x32 photos, 100 fine classes; downloads when online."""

    name: ClassVar[str] = "cifar100"
    title: ClassVar[str] = "CIFAR-100"
    mean: ClassVar[tuple[float, float, float]] = (0.5071, 0.4865, 0.4409)  # train-set statistics
    std: ClassVar[tuple[float, float, float]] = (0.2673, 0.2564, 0.2762)
    crop_padding: ClassVar[int] = 4
    flip: ClassVar[bool] = True
    default_recipe: ClassVar[str] = "paper"
    notes: ClassVar[str] = "official test set as the val split; fine labels (100 classes)"
    counts: ClassVar[dict[str, int]] = {"train": 50_000, "val": 10_000}
    known_sources: ClassVar[dict[str, str]] = {"cifar-100-python.tar.gz": MD5}
    downloads: ClassVar[tuple[Download, ...]] = (
        Download(("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",), "cifar-100-python.tar.gz", MD5),
    )
    from_example: ClassVar[str] = "cifar-100-python.tar.gz"
    from_also: ClassVar[str] = "the folder extracted from it"

    def build(self, source: Source, out: CacheWriter) -> None:
        meta = source.find_one("meta")
        if meta is None:
            raise LeakbenchError(f"CIFAR-100: no meta file in {', '.join(map(str, source.origins))}; "
                                 f"expected {LAYOUT}")
        names = safe_unpickle(source.read(meta), source.label(meta))
        if not isinstance(names, dict) or len(names.get("fine_label_names", [])) != 100:
            raise LeakbenchError(f"CIFAR-100: {source.label(meta)} does not list the 100 fine_label_names")
        out.classes = [str(n) for n in names["fine_label_names"]]
        out.layout = "cifar-100-python"
        for split, file in (("train", "train"), ("val", "test")):
            images, labels, files = read_pickles(source, self.title, [file], "fine_labels", LAYOUT)
            out.put(split, images, labels, files)


@hookimpl
def register_datasets():
    return [Cifar100]
