"""scikit-learn's bundled handwritten digits: real data that ships with the package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from leakbench import Dataset, ImageSet, Recipe, hookimpl

_CACHE: dict[int, Any] = {}


@dataclass
class Digits(Dataset):
    """1,797 handwritten digits (sklearn), 10 classes, upscaled: the offline default."""

    name: ClassVar[str] = "digits"
    crop_padding: ClassVar[int] = 2
    flip: ClassVar[bool] = False  # digits are not mirror-symmetric
    default_recipe: ClassVar[str] = "digits"
    recipes: ClassVar[dict[str, Recipe]] = {
        # Sized for the 3-minute, 2-core CPU budget of the main job (see describe()).
        "digits": Recipe("digits", epochs=15, batch_size=64, lr=0.05, schedule="cosine",
                         eval_batch_size=512),
    }
    # ResNet18 with stage widths 16/32/64/128 instead of 64/128/256/512, so four methods
    # train within the CPU budget; --backbone resnet18 gives the full width.
    default_backbone: ClassVar[str] = "resnet18:width=16"
    size: int = 16

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 256:
            raise ValueError(f"size must be between 8 and 256 pixels, got {self.size}")

    @property
    def mean(self) -> tuple[float, float, float]:  # type: ignore[override]
        return _stats(self.size)[0]

    @property
    def std(self) -> tuple[float, float, float]:  # type: ignore[override]
        return _stats(self.size)[1]

    def load(self, split: str, root: Path) -> ImageSet:
        images, labels = _split(self.size)[split]
        return ImageSet(images, labels, [str(d) for d in range(10)])

    def describe(self) -> str:
        return (f"{self.size}x{self.size} px (upscaled from 8x8); default backbone {self.default_backbone}; "
                "fixed stratified 80/20 train/test split (seed 0)")


def _split(size: int) -> dict[str, tuple[Any, Any]]:
    """Train/val tensors, stratified and fixed: every user gets the same split."""
    if size not in _CACHE:
        import numpy as np
        import torch
        import torch.nn.functional as F
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        pixels = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # ink = bright
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
        labels = torch.from_numpy(bunch.target.astype(np.int64))
        train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0,
                                              stratify=bunch.target)
        _CACHE[size] = {"train": (images[train_idx], labels[train_idx]), "val": (images[val_idx], labels[val_idx])}
    return _CACHE[size]


def _stats(size: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    images = _split(size)["train"][0].float() / 255
    mean, std = images.mean().item(), images.std().item()
    return (mean,) * 3, (std,) * 3


@hookimpl
def register_datasets():
    return [Digits]
