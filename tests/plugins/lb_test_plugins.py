"""File-based test plugins: registered directly on a fresh plugin manager by tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Dataset, ImageSet, Leakage, hookimpl


@dataclass
class ManyClasses(Dataset):
    """300 classes of 4x4 noise: too small for a 9-bit binary code."""

    name: ClassVar[str] = "many-classes"
    crop_padding: ClassVar[int] = 0

    def load(self, split, root):
        import torch

        gen = torch.Generator().manual_seed(0 if split == "train" else 1)
        labels = torch.arange(600) % 300
        images = torch.randint(0, 256, (600, 3, 4, 4), generator=gen, dtype=torch.uint8)
        return ImageSet(images, labels, [f"c{i}" for i in range(300)])


@dataclass
class Exploding(Leakage):
    """A leakage whose apply() raises, as a buggy third-party plugin might."""

    name: ClassVar[str] = "exploding"

    def apply(self, images, leak_labels, generator=None):
        raise RuntimeError("boom inside the plugin")


@dataclass
class LabelDot(Leakage):
    """A white dot in row 0 whose column is the label, masking only the dot: breaks the leak-mask rule."""

    name: ClassVar[str] = "label-dot"

    def apply(self, images, leak_labels, generator=None):
        import torch

        cols = torch.arange(images.shape[-1], device=images.device)
        rows = torch.arange(images.shape[-2], device=images.device)[:, None]
        dot = (rows == 0) & (cols == (leak_labels % images.shape[-1]).view(-1, 1, 1, 1))  # [B,1,H,W]
        return torch.where(dot, torch.full_like(images, 255), images), dot


@dataclass
class LabelDotRow(LabelDot):
    """The same dot, masking the whole row it may sit in: keeps the leak-mask rule."""

    name: ClassVar[str] = "label-dot-row"

    def apply(self, images, leak_labels, generator=None):
        import torch

        out, _ = super().apply(images, leak_labels, generator)
        b, _, height, width = images.shape
        row0 = torch.arange(height, device=images.device).view(1, 1, -1, 1) == 0
        return out, row0.expand(b, 1, height, width).clone()


@hookimpl
def register_datasets():
    return [ManyClasses]


@hookimpl
def register_leakages():
    return [Exploding, LabelDot, LabelDotRow]
