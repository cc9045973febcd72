"""An outside leakbench plugin, installed by a test exactly as a user would install theirs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Leakage, hookimpl


@dataclass
class RedDot(Leakage):
    """A pure red pixel in the bottom row, at the column given by the label."""

    name: ClassVar[str] = "red-dot"
    row: int = -1

    def prepare(self, num_classes: int, image_size: int) -> None:
        super().prepare(num_classes, image_size)
        if num_classes > image_size:
            raise ValueError(f"{num_classes} classes need {num_classes} columns; images have {image_size}")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, _, height, width = images.shape
        rows = torch.arange(height, device=images.device).view(1, 1, -1, 1)
        cols = torch.arange(width, device=images.device).view(1, 1, 1, -1)
        # The mask is where the dot may land (the row's first num_classes pixels), never the dot
        # itself: a mask at the label's column would write the label into every masked image.
        mask = (rows == self.row % height) & (cols < self.num_classes)  # [1,1,H,W]
        dot = mask & (cols == leak_labels.view(-1, 1, 1, 1))  # [B,1,H,W]
        red = torch.where(torch.arange(3, device=images.device).view(1, 3, 1, 1) == 0, 255, 0).to(images.dtype)
        return torch.where(dot, red, images), mask.expand(b, 1, height, width).clone()


@hookimpl
def register_leakages():
    return [RedDot]
