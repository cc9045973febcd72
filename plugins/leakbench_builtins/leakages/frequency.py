"""A low-amplitude class-specific plane wave over the whole image: a SIG / frequency-band leak."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from leakbench import Leakage, hookimpl

# Colour of the wave: grey first, then two chroma directions (orthogonal to grey and to each other).
_COLOURS = ((1.0, 1.0, 1.0), (1.0, -1.0, 0.0), (0.5, 0.5, -1.0))


@lru_cache(maxsize=64)
def waves(num_classes: int, lowest: int) -> tuple[tuple[int, int, int], ...]:
    """(u, v, colour) per class: wave numbers in cycles per image and a colour index.

    Classes fill square rings max(|u|,|v|) = r from r = ``lowest`` upwards, every
    orientation of a ring in grey first, then in each chroma (grey waves carry the most
    energy and were learned fastest on digits). Patterns never differ only in phase, so
    a translation-invariant CNN can tell them apart; within a ring they are orthogonal.
    """
    out: list[tuple[int, int, int]] = []
    r = lowest
    while len(out) < num_classes:
        ring = [(u, v) for u in range(0, r + 1) for v in range(-r, r + 1)
                if max(abs(u), abs(v)) == r and (u > 0 or v > 0)]  # half plane: cos(k.x) == cos(-k.x)
        ring.sort(key=lambda k: math.atan2(k[1], k[0]))
        out += [(u, v, colour) for colour in range(len(_COLOURS)) for u, v in ring]
        r += 1
    return tuple(out[:num_classes])


@dataclass
class Frequency(Leakage):
    """Low-amplitude cosine wave over the whole image; its orientation, frequency and colour encode the class."""

    name: ClassVar[str] = "frequency"
    # Defaults tuned on digits (naive, 15 epochs): amplitude 8 or 12 was never learned, 16 was;
    # high frequencies separate best from the smooth image content.
    amplitude: float = 16.0  # grey levels (of 255) per channel
    frequency: int = 6  # the lowest wave number, in cycles per image; more classes use higher rings

    def __post_init__(self) -> None:
        if not 0.0 < self.amplitude <= 255.0:
            raise ValueError(f"amplitude must be in (0, 255] grey levels, got {self.amplitude}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be at least 1 cycle per image, got {self.frequency}")

    def prepare(self, num_classes: int, image_size: int) -> None:
        super().prepare(num_classes, image_size)
        highest = max(max(abs(u), abs(v)) for u, v, _ in waves(num_classes, self.frequency))
        if 2 * highest >= image_size:
            raise ValueError(f"the waves for {num_classes} classes from frequency {self.frequency} reach "
                             f"{highest} cycles per image, but {image_size}x{image_size} images carry at most "
                             f"{(image_size - 1) // 2} (Nyquist); use larger images or a lower frequency")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, _, height, width = images.shape
        dev = images.device
        waves_on_device, colours_on_device = _tables(self.num_classes, self.frequency, dev)
        table = waves_on_device[leak_labels]
        colours = colours_on_device[table[:, 2].long()]  # [B,3]
        ys = torch.arange(height, device=dev, dtype=torch.float32).view(1, -1, 1) / height
        xs = torch.arange(width, device=dev, dtype=torch.float32).view(1, 1, -1) / width
        px = (2 * math.pi) * table[:, 0].view(-1, 1, 1) * xs  # [B,1,W]
        py = (2 * math.pi) * table[:, 1].view(-1, 1, 1) * ys  # [B,H,1]
        # cos(px + py) from separable factors: trig on H + W values per image, not H x W
        wave = (torch.cos(py) * torch.cos(px) - torch.sin(py) * torch.sin(px))[:, None]
        wave = wave * (self.amplitude * colours)[:, :, None, None]
        out = (images.float() + wave).round_().clamp_(0, 255).to(torch.uint8)
        mask = torch.ones(b, 1, height, width, dtype=torch.bool, device=dev)
        return out, mask


@lru_cache(maxsize=16)  # per device: built per batch it would be a blocking host-to-device copy every step
def _tables(num_classes: int, lowest: int, device):
    """float32 ``[N,3]`` waves (u, v, colour index) and the ``[C,3]`` colour table on ``device``."""
    import torch

    return (torch.tensor(waves(num_classes, lowest), dtype=torch.float32, device=device),
            torch.tensor(_COLOURS, device=device))


@hookimpl
def register_leakages():
    return [Frequency]
