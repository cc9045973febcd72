"""A class-coloured square: the Decoy-MNIST / BadNets stamp, with a position knob."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from leakbench import Leakage, hookimpl
from leakbench_builtins.leakages._palette import POSITIONS, class_colours, offsets


@dataclass
class Patch(Leakage):
    """Square of size x size pixels in the class's colour (RGB-grid palette), fixed or random place."""

    name: ClassVar[str] = "patch"
    size: int = 3
    position: Literal["corner", "center", "random"] = "corner"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be at least 1 pixel, got {self.size}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got '{self.position}'")

    def prepare(self, num_classes: int, image_size: int) -> None:
        super().prepare(num_classes, image_size)
        if self.size > image_size:
            raise ValueError(f"patch size {self.size} does not fit in {image_size}x{image_size} images; "
                             f"use size <= {image_size}")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, _, height, width = images.shape
        dev = images.device
        top, left = offsets(self.position, b, (self.size, self.size), (height, width), generator, dev)
        ys = torch.arange(height, device=dev).view(1, 1, -1, 1) - top.view(-1, 1, 1, 1)
        xs = torch.arange(width, device=dev).view(1, 1, 1, -1) - left.view(-1, 1, 1, 1)
        mask = (ys >= 0) & (ys < self.size) & (xs >= 0) & (xs < self.size)  # [B,1,H,W]
        colours = class_colours(self.num_classes, dev)[leak_labels]  # [B,3]
        return torch.where(mask, colours[:, :, None, None], images), mask


@hookimpl
def register_leakages():
    return [Patch]
