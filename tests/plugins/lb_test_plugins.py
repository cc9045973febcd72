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


@hookimpl
def register_datasets():
    return [ManyClasses]


@hookimpl
def register_leakages():
    return [Exploding]
