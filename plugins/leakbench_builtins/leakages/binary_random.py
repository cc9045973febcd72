"""Binary-corner's code, but at a random place in every image: position variance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from leakbench import Leakage, hookimpl
from leakbench_builtins.leakages._palette import offsets, place


@dataclass
class BinaryRandom(Leakage):
    """Label as ceil(log2 N) bits, MSB first, white=1 black=0, in a random row and column."""

    name: ClassVar[str] = "binary-random"

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
        k = self.bits
        shifts = torch.arange(k - 1, -1, -1, device=images.device)
        code = ((leak_labels[:, None] >> shifts) & 1).to(torch.uint8)[:, None, :] * 255  # [B,1,k], MSB first
        top, left = offsets("random", b, (1, k), (height, width), generator, images.device)
        values, mask = place(code, top, left, height, width)
        mask = mask[:, None]
        return torch.where(mask, values[:, None], images), mask


@hookimpl
def register_leakages():
    return [BinaryRandom]
