"""Tiny ImageNet (cs231n): 200 ImageNet classes at 64x64, from the official layout."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from leakbench import hookimpl
from leakbench.data.datastore import CachedDataset, CacheWriter, Download
from leakbench.data.extract import Source
from leakbench.engine.recipes import RECIPES
from leakbench.errors import LeakbenchError
from leakbench.types import ImageSet, Recipe

LAYOUT = ("tiny-imagenet-200/{wnids.txt,words.txt}, train/<wnid>/images/*.JPEG, "
          "val/images/*.JPEG and val/val_annotations.txt (official layout)")
PARTS = " (the part archives: pass all three, e.g. --from tiny-imagenet-200.part*.tar.gz)"


@dataclass
class TinyImageNet(CachedDataset):
    """Tiny ImageNet: 100,000 train / 10,000 val 64x64 photos, 200 classes (wnids, sorted)."""

    name: ClassVar[str] = "tiny-imagenet"
    title: ClassVar[str] = "Tiny ImageNet"
    # per-channel pixel statistics of the train split, as measured by `leakbench data prepare`
    mean: ClassVar[tuple[float, float, float]] = (0.4802, 0.4481, 0.3975)
    std: ClassVar[tuple[float, float, float]] = (0.2764, 0.2689, 0.2816)
    flip: ClassVar[bool] = True
    default_recipe: ClassVar[str] = "paper"
    # the MET paper trained 90 epochs on Tiny ImageNet (400 on CIFAR-10); same schedule shape
    recipes: ClassVar[dict[str, Recipe]] = {
        "paper": dataclasses.replace(RECIPES["paper"], epochs=90),
        # The CPU track (`--recipe cpu`): clean, naive, oracle, MET and the random-mask control,
        # one seed, within 2 hours of a 2-core CPU. 64 px with the CIFAR stem costs 4x 32 px, so
        # images are area-downsampled to 32 px (size=32) and the CIFAR-10 track's per-image cost
        # applies (~8.4 naive runs for the five methods): 50,000 train images (250 per class) for
        # 6 epochs. Scored on the whole official val set (10,000 images, also at 32 px).
        "cpu": Recipe("cpu", epochs=6, batch_size=128, lr=0.05, schedule="cosine", backbone="resnet18:width=16",
                      dataset_options={"limit": 50_000, "size": 32}),
    }
    notes: ClassVar[str] = ("official val set (labels from val_annotations.txt) as the val split; class names "
                            "from words.txt; greyscale JPEGs converted to RGB")
    counts: ClassVar[dict[str, int]] = {"train": 100_000, "val": 10_000}
    known_sources: ClassVar[dict[str, str]] = {
        "tiny-imagenet-200.part0.tar.gz": "sha256:8523c849f46825d54b606be1736d8bb36b3455e5bb0ca1afb835120ababaa090",
        "tiny-imagenet-200.part1.tar.gz": "sha256:95036906edae1f48f254d339178298bcb4ca39940b6a4af7fe0e1d66eb33cc6d",
        "tiny-imagenet-200.part2.tar.gz": "sha256:41a4d23a66461414e9eefc887009f1a124a46f4e1ca53334dfe7d00a5113e2b3",
        "tiny-imagenet-200.zip": "md5:90528d7ca1a48142e341f4ef8d21d0de",
    }
    downloads: ClassVar[tuple[Download, ...]] = (
        Download(("http://cs231n.stanford.edu/tiny-imagenet-200.zip",), "tiny-imagenet-200.zip",
                 "md5:90528d7ca1a48142e341f4ef8d21d0de"),
    )
    from_example: ClassVar[str] = "tiny-imagenet-200.part*.tar.gz"
    from_also: ClassVar[str] = "the official tiny-imagenet-200.zip, or the extracted tiny-imagenet-200 folder"

    size: int = 64  # pixels; below 64 both splits are area-downsampled on load (the cache stays 64 px)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 8 <= self.size <= 64 or 64 % self.size:
            raise ValueError(f"size must divide 64 (8, 16, 32 or 64 pixels), got {self.size}")

    @property
    def crop_padding(self) -> int:  # type: ignore[override]
        return max(1, 8 * self.size // 64)  # 8 px at 64 px: CIFAR's 4 px at 32 px

    def describe(self) -> str:
        scale = f"downsampled to {self.size}x{self.size} px (area)" if self.size != 64 else ""
        return "; ".join(filter(None, [super().describe(), scale]))

    def load(self, split: str, root: Path) -> ImageSet:
        images = super().load(split, root)
        if self.size == 64:
            return images
        import torch
        import torch.nn.functional as F

        factor = 64 // self.size  # block means: exact, and the same on every machine
        small = F.avg_pool2d(images.images.float(), factor).round_().to(torch.uint8)
        return ImageSet(small, images.labels, images.class_names)

    def wanted(self, name: str) -> bool:
        # the unlabelled test/ split and the bounding boxes are not used
        return "/test/" not in f"/{name}" and not name.endswith("_boxes.txt")

    def build(self, source: Source, out: CacheWriter) -> None:
        wnids_file = source.find_one("wnids.txt")
        if wnids_file is None:
            raise LeakbenchError(f"Tiny ImageNet: no wnids.txt in {', '.join(map(str, source.origins))}; "
                                 f"expected {LAYOUT}{PARTS}")
        base = wnids_file[: -len("wnids.txt")]
        wnids = sorted({w.strip() for w in source.read(wnids_file).decode().split() if w.strip()})
        words = {}
        if f"{base}words.txt" in source.entries:
            for line in source.read(f"{base}words.txt").decode().splitlines():
                wnid, _, text = line.partition("\t")
                words[wnid] = text.strip()
        out.classes = [words.get(w) or w for w in wnids]
        out.layout = "tiny-imagenet-200"
        index = {w: i for i, w in enumerate(wnids)}

        train = [n for n in source.names() if n.startswith(f"{base}train/") and n.endswith(".JPEG")]
        by_class = {n[len(base) + 6:].split("/", 1)[0] for n in train}
        if unknown := sorted(by_class - set(index)):
            raise LeakbenchError(f"Tiny ImageNet: train/ has classes not in wnids.txt ({', '.join(unknown[:3])})")
        if missing := sorted(set(index) - by_class):
            raise LeakbenchError(f"Tiny ImageNet: train/ has no images for {len(missing)} of the {len(wnids)} "
                                 f"classes in wnids.txt (e.g. {missing[0]}); expected {LAYOUT}{PARTS}")
        out.decode("train", source, train, [index[n[len(base) + 6:].split("/", 1)[0]] for n in train], size=64)

        annotations = f"{base}val/val_annotations.txt"
        if annotations not in source.entries:
            raise LeakbenchError(f"Tiny ImageNet: {annotations} is missing; expected {LAYOUT}{PARTS}")
        val, labels = [], []
        for number, line in enumerate(source.read(annotations).decode().splitlines(), 1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise LeakbenchError(f"Tiny ImageNet: {annotations} line {number} has no known wnid: {line[:60]!r}")
            val.append(f"{base}val/images/{fields[0]}")
            labels.append(index[fields[1]])
        images = {n for n in source.names() if n.startswith(f"{base}val/images/")}
        if missing := sorted(set(val) - images):
            raise LeakbenchError(f"Tiny ImageNet: {len(missing)} validation images listed in val_annotations.txt "
                                 f"are missing (e.g. {missing[0]})")
        if extra := sorted(images - set(val)):
            raise LeakbenchError(f"Tiny ImageNet: {len(extra)} validation images have no line in "
                                 f"val_annotations.txt (e.g. {extra[0]})")
        out.decode("val", source, val, labels, size=64)


@hookimpl
def register_datasets():
    return [TinyImageNet]
