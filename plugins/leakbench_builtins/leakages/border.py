"""A class-coloured frame round the image: a leak that is everywhere at the edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Leakage, hookimpl
from leakbench_builtins.leakages._palette import class_colours


@dataclass
class Border(Leakage):
    """Frame of `width` pixels on all four sides in the class's colour (RGB-grid palette)."""

    name: ClassVar[str] = "border"
    width: int = 1

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"width must be at least 1 pixel, got {self.width}")

    def prepare(self, num_classes: int, image_size: int) -> None:
        super().prepare(num_classes, image_size)
        if 2 * self.width >= image_size:
            raise ValueError(f"border width {self.width} leaves no interior in {image_size}x{image_size} images; "
                             f"use width <= {max(0, (image_size - 1) // 2)}")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, _, height, width = images.shape
        w, dev = self.width, images.device
        ys = torch.arange(height, device=dev).view(-1, 1)
        xs = torch.arange(width, device=dev).view(1, -1)
        frame = (ys < w) | (ys >= height - w) | (xs < w) | (xs >= width - w)  # [H,W]
        mask = frame.expand(b, 1, height, width)
        colours = class_colours(self.num_classes, dev)[leak_labels]
        return torch.where(mask, colours[:, :, None, None], images), mask.clone()


@hookimpl
def register_leakages():
    return [Border]
