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

        out, b = images.clone(), torch.arange(images.shape[0], device=images.device)
        out[b, :, self.row, leak_labels] = torch.tensor([255, 0, 0], dtype=images.dtype, device=images.device)
        mask = torch.zeros(images.shape[0], 1, *images.shape[-2:], dtype=torch.bool, device=images.device)
        mask[b, 0, self.row, leak_labels] = True
        return out, mask


@hookimpl
def register_leakages():
    return [RedDot]
