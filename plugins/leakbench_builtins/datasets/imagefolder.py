"""Bring your own data: any ``DIR/train/<class>/*`` + ``DIR/val/<class>/*`` (or ``test/``) tree."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from leakbench import hookimpl
from leakbench.data import data_root
from leakbench.data.datastore import CachedDataset, CacheWriter, image_tree
from leakbench.data.extract import Source
from leakbench.errors import LeakbenchError

LAYOUT = "DIR/train/<class>/<image> and DIR/val/<class>/<image> (or DIR/test/...)"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class ImageFolder(CachedDataset):
    """Your own images: DIR/train/<class>/* and DIR/val|test/<class>/*, with --data-root DIR."""

    name: ClassVar[str] = "imagefolder"
    title: ClassVar[str] = "image folder"
    crop_padding: ClassVar[int] = 4
    flip: ClassVar[bool] = True
    default_recipe: ClassVar[str] = "paper"
    notes: ClassVar[str] = (
        "classes are the sorted train/ folder names; size=N scales the shorter side to N and crops the centre "
        "(size=0: all images must share one size); stats=train normalises with the train split's per-channel "
        "mean/std (measured when the cache is built), stats=imagenet with ImageNet's; the decoded cache lives in "
        "DIR/.leakbench-cache and is rebuilt when files change")
    from_example: ClassVar[str] = "DIR"
    in_place: ClassVar[bool] = True
    path: str = ""
    size: int = 0
    stats: Literal["train", "imagenet"] = "train"
    _stats: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size and not 8 <= self.size <= 512:
            raise ValueError(f"size must be 0 (keep the images' own size) or 8 to 512 pixels, got {self.size}")

    @property
    def mean(self) -> tuple[float, float, float]:  # type: ignore[override]
        return (self._stats or IMAGENET)[0]

    @property
    def std(self) -> tuple[float, float, float]:  # type: ignore[override]
        return (self._stats or IMAGENET)[1]

    def folder(self, root: Path) -> Path:
        return Path(self.path or root).expanduser().resolve()

    def identity(self, root: Path) -> dict[str, Any]:
        """The folder itself and its content: two roots are two experiments, even as copies."""
        return {"folder": str(self.folder(root)), **super().identity(root)}

    def in_place_sources(self, root: Path) -> list[Path]:
        folder = self.folder(root)
        if not (folder / "train").is_dir():
            raise LeakbenchError(f"imagefolder reads {LAYOUT}; {folder} has no train/ folder: "
                                 "pass --data-root DIR or --dataset imagefolder:path=DIR")
        return [folder]

    def cache_dir(self, root: Path) -> Path:
        """``DIR/.leakbench-cache/size-N``; a read-only DIR caches under the user data root instead."""
        folder = self.folder(root)
        if os.access(folder, os.W_OK):
            return folder / ".leakbench-cache" / f"size-{self.size}"
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
        return data_root() / "imagefolder" / f"{folder.name}-{digest}-size-{self.size}"

    def build(self, source: Source, out: CacheWriter) -> None:
        tree = image_tree(source, f"imagefolder {source.origins[0]}", LAYOUT)
        out.classes = sorted({cls for _, cls in tree["train"]})
        out.layout = "image-folder"
        index = {c: i for i, c in enumerate(out.classes)}
        if unknown := sorted({cls for _, cls in tree["val"]} - set(index)):
            raise LeakbenchError(f"imagefolder: validation classes {', '.join(unknown[:3])} have no train/ folder")
        for split, items in tree.items():
            out.decode(split, source, [n for n, _ in items], [index[c] for _, c in items], resize=self.size)

    def use_manifest(self, manifest: dict[str, Any]) -> None:
        if self.stats == "train":
            train = manifest["splits"]["train"]
            self._stats = (tuple(train["mean"]), tuple(train["std"]))


@hookimpl
def register_datasets():
    return [ImageFolder]
