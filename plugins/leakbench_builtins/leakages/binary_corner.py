"""The MET paper's leak: the label in binary, in the first pixels of row 0."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from leakbench import Leakage, hookimpl


@dataclass
class BinaryCorner(Leakage):
    """Label as ceil(log2 N) bits in row 0 from the left, MSB first, white=1 black=0."""

    name: ClassVar[str] = "binary-corner"

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(self.num_classes))) if self.num_classes > 1 else 1

    def prepare(self, num_classes: int, image_size: int) -> None:
        super().prepare(num_classes, image_size)
        if self.bits > image_size:
            raise ValueError(f"the code for {num_classes} classes needs {self.bits} pixels in a row, "
                             f"but images are only {image_size} wide; use larger images")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, _, height, width = images.shape
        k, dev = self.bits, images.device
        cols = torch.arange(width, device=dev)
        region = (torch.arange(height, device=dev)[:, None] == 0) & (cols < k)  # [H,W]: row 0, first k columns
        # Written with torch.where, never by assigning a Python scalar into an index: that
        # dispatches differently across torch releases (a host-built tensor on some).
        bits = (leak_labels[:, None] >> (k - 1 - cols).clamp(min=0)) & 1  # [B,W], MSB in column 0
        values = (bits * 255).to(images.dtype)[:, None, None, :]  # [B,1,1,W]
        return torch.where(region, values, images), region.expand(b, 1, height, width).clone()

    @staticmethod
    def decode(images, bits: int):
        """Read the label back from spoiled uint8 images (for tests and probes)."""
        import torch

        row = (images[:, 0, 0, :bits] > 127).long()
        weights = 2 ** torch.arange(bits - 1, -1, -1, device=images.device)
        return (row * weights).sum(1)


@hookimpl
def register_leakages():
    return [BinaryCorner]
