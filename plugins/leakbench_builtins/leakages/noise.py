"""A fixed class-wise noise pattern within +-epsilon: the availability-attack shortcut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Leakage, hookimpl

_SEED = 0x1EA4B  # fixed: the patterns belong to the leak, not to a run
_MASK32 = 0xFFFFFFFF


def _mix32(x):
    """A 32-bit integer hash (Wang / lowbias32 style) on int64 tensors, exact on every device."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def signs(labels, channels: int, height: int, width: int):
    """int16 ``[B,C,H,W]`` of +-1: class ``labels[b]``'s pattern, a pure function of the class.

    A counter-based hash rather than a seeded generator: no table of N patterns to keep
    (N x C x H x W would not fit for ImageNet-sized runs), no dependence on the run's
    generator, and CPU and GPU give the same pattern.
    """
    import torch

    dev = labels.device
    pixel = torch.arange(channels * height * width, device=dev, dtype=torch.int64).view(1, channels, height, width)
    key = _mix32((labels.view(-1, 1, 1, 1).to(torch.int64) * 0x9E3779B1 + _SEED) & _MASK32)
    bit = _mix32(key ^ pixel) & 1
    return (bit * 2 - 1).to(torch.int16)


@dataclass
class Noise(Leakage):
    """Add a fixed per-class random +-epsilon pattern to every pixel (class-wise 'unlearnable' noise)."""

    name: ClassVar[str] = "noise"
    epsilon: int = 8  # grey levels (of 255): 8 is the usual 8/255 of availability attacks

    def __post_init__(self) -> None:
        if not 1 <= self.epsilon <= 255:
            raise ValueError(f"epsilon must be between 1 and 255 grey levels, got {self.epsilon}")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, c, height, width = images.shape
        noise = signs(leak_labels, c, height, width) * self.epsilon
        out = (images.to(torch.int16) + noise).clamp_(0, 255).to(torch.uint8)
        mask = torch.ones(b, 1, height, width, dtype=torch.bool, device=images.device)
        return out, mask


@hookimpl
def register_leakages():
    return [Noise]
