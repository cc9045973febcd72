"""A fixed class-wise noise pattern within +-epsilon: the availability-attack shortcut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Leakage, hookimpl
from leakbench.data.hashing import GOLDEN32, MASK32, hash32

_SEED = 0x1EA4B  # fixed: the patterns belong to the leak, not to a run


def signs(labels, channels: int, height: int, width: int, tile: int):
    """int16 ``[B,C,H,W]`` of +-1: class ``labels[b]``'s ``tile`` x ``tile`` pattern, repeated.

    A counter-based hash rather than a seeded generator: no table of N patterns to keep
    (N x C x H x W would not fit for ImageNet-sized runs), no dependence on the run's
    generator, and CPU and GPU give the same pattern. Only one tile is hashed per image.
    """
    import torch

    dev = labels.device
    th, tw = min(tile, height), min(tile, width)
    ys = torch.arange(th, device=dev).view(1, 1, -1, 1)
    xs = torch.arange(tw, device=dev).view(1, 1, 1, -1)
    pixel = (torch.arange(channels, device=dev).view(1, -1, 1, 1) * tile + ys) * tile + xs  # [1,C,th,tw]
    key = hash32((labels.view(-1, 1, 1, 1).to(torch.int64) * GOLDEN32 + _SEED) & MASK32)
    one_tile = ((hash32(key ^ pixel) & 1) * 2 - 1).to(torch.int16)  # [B,C,th,tw]
    reps = (1, 1, -(-height // th), -(-width // tw))
    return one_tile.repeat(reps)[:, :, :height, :width]


@dataclass
class Noise(Leakage):
    """Add a fixed per-class random +-epsilon tiled pattern to every pixel (class-wise 'unlearnable' noise)."""

    name: ClassVar[str] = "noise"
    # Grey levels (of 255). Tuned on digits (naive, 15 epochs): 8, the usual 8/255 of availability
    # attacks, was never learned there; 12 was, only just; 16 with a margin.
    epsilon: int = 16
    # Side of the repeated pattern tile, in pixels. A tiled pattern is a texture that a
    # convolution spots anywhere; a tile as large as the image gives one unrepeated
    # pattern per class (on digits at epsilon 16: leak following 0.85 untiled, 0.99 tiled).
    tile: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.epsilon <= 255:
            raise ValueError(f"epsilon must be between 1 and 255 grey levels, got {self.epsilon}")
        if self.tile < 2:
            raise ValueError(f"tile must be at least 2 pixels, got {self.tile}")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, c, height, width = images.shape
        noise = signs(leak_labels, c, height, width, self.tile) * self.epsilon
        out = (images.to(torch.int16) + noise).clamp_(0, 255).to(torch.uint8)
        mask = torch.ones(b, 1, height, width, dtype=torch.bool, device=images.device)
        return out, mask


@hookimpl
def register_leakages():
    return [Noise]
