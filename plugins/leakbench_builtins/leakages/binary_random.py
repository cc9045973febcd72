"""Binary-corner's code, but at a random place in every image: position variance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from leakbench import Leakage, hookimpl
from leakbench_builtins.leakages._palette import offsets, place

MARKER = (255, 0, 0)  # red: unlike both code colours, and rare in grey or natural backgrounds


@dataclass
class BinaryRandom(Leakage):
    """Label as ceil(log2 N) bits, MSB first, white=1 black=0, as red-delimited bars at a random place."""

    name: ClassVar[str] = "binary-random"
    # Without end markers a code on a black background is ambiguous once its place is
    # random: labels 1, 2, 4 and 8 all become "one white pixel somewhere".
    markers: bool = True
    bar_width: int = 1  # pixels per bit along the row, as binary-corner
    # Rows each bit spans. On digits (naive, 15 epochs) a one-row code at a random place
    # was never learned (leak following 0.00; 0.32 with 2x2 bits, 0.79 with 4 rows), 6 rows were.
    bar_height: int = 6

    def __post_init__(self) -> None:
        for knob in ("bar_width", "bar_height"):
            if getattr(self, knob) < 1:
                raise ValueError(f"{knob} must be at least 1 pixel, got {getattr(self, knob)}")

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(self.num_classes))) if self.num_classes > 1 else 1

    @property
    def length(self) -> int:
        """Pixels the code spans along its row: the bits plus one marker at each end."""
        return (self.bits + 2 * self.markers) * self.bar_width

    def prepare(self, num_classes: int, image_size: int) -> None:
        super().prepare(num_classes, image_size)
        if self.length > image_size or self.bar_height > image_size:
            ends = " and its two end markers" if self.markers else ""
            raise ValueError(f"the code for {num_classes} classes{ends} needs {self.length}x{self.bar_height} "
                             f"pixels (width x height), but images are {image_size}x{image_size}; "
                             "use larger images or a smaller bar_width or bar_height")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, _, height, width = images.shape
        dev = images.device
        shifts = torch.arange(self.bits - 1, -1, -1, device=dev)
        symbols = (leak_labels[:, None] >> shifts) & 1  # [B,k]: 0 black, 1 white, MSB first
        if self.markers:
            end = torch.full((b, 1), 2, dtype=symbols.dtype, device=dev)  # 2: marker colour
            symbols = torch.cat([end, symbols, end], dim=1)
        stamp = symbols[:, None, :].repeat_interleave(self.bar_height, 1).repeat_interleave(self.bar_width, 2)
        top, left = offsets("random", b, tuple(stamp.shape[1:]), (height, width), generator, dev)
        values, mask = place(stamp, top, left, height, width)
        values, mask = _bar_colours(dev)[values].permute(0, 3, 1, 2), mask[:, None]  # [B,3,H,W], [B,1,H,W]
        return torch.where(mask, values, images), mask


@lru_cache(maxsize=8)  # per device: built per batch it would be a blocking host-to-device copy every step
def _bar_colours(device):
    """uint8 ``[3,3]``: black (bit 0), white (bit 1), the end-marker colour."""
    import torch

    return torch.tensor([(0, 0, 0), (255, 255, 255), MARKER], dtype=torch.uint8, device=device)


@hookimpl
def register_leakages():
    return [BinaryRandom]
