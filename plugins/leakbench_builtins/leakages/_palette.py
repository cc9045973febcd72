"""Shared pieces of the leakage zoo: class colours, a tiny digit font, stamping, positions.

Everything here is a pure function of the class count (never of a run's generator), so the
training and validation leaks of a run agree, and every device computes the same leak.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor

POSITIONS = ("corner", "center", "random")

# 3x5 digits, one string of 15 bits per digit, row by row (designed so no two coincide).
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111",
}
GLYPH_HEIGHT, GLYPH_WIDTH = 5, 3


def palette_levels(num_classes: int) -> int:
    """Levels per channel of the colour grid: the smallest n with n**3 - 1 >= num_classes."""
    n = 2
    while n**3 - 1 < num_classes:
        n += 1
    return n


@lru_cache(maxsize=64)
def _palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    n = palette_levels(num_classes)
    levels = [round(255 * i / (n - 1)) for i in range(n)]
    cells = n**3 - 1
    out = []
    for c in range(num_classes):
        cell = 1 + c * cells // num_classes  # spread over the cube; cell 0 (black) is never used
        out.append((levels[cell // (n * n)], levels[cell // n % n], levels[cell % n]))
    return tuple(out)


@lru_cache(maxsize=64)  # per device: built per batch it would be a blocking host-to-device copy every step
def class_colours(num_classes: int, device: torch.device | str = "cpu") -> Tensor:
    """uint8 ``[N,3]`` colours, one per class, on an RGB grid with n levels per channel (read-only).

    Why a grid rather than a hue wheel: any two classes then differ by at least
    255/(n-1) grey levels in some channel (127 for N <= 26, 51 for N <= 215), so colours
    stay tellable apart for hundreds of classes; black is skipped because it is the
    background of many datasets (digits, MNIST), where a black leak would be invisible.
    """
    import torch

    return torch.tensor(_palette(num_classes), dtype=torch.uint8, device=device)


def glyph_size(num_classes: int, scale: int = 1) -> tuple[int, int]:
    """(height, width) in pixels of the zero-padded decimal label for ``num_classes`` classes."""
    digits = len(str(max(num_classes - 1, 0)))
    return GLYPH_HEIGHT * scale, (digits * (GLYPH_WIDTH + 1) - 1) * scale


@lru_cache(maxsize=64)
def _glyph_bits(num_classes: int) -> tuple[tuple[tuple[bool, ...], ...], ...]:
    digits = len(str(max(num_classes - 1, 0)))
    glyphs = []
    for c in range(num_classes):
        rows = []
        for r in range(GLYPH_HEIGHT):
            row: list[bool] = []
            for i, ch in enumerate(str(c).zfill(digits)):
                if i:
                    row.append(False)  # one blank column between digits
                row.extend(bit == "1" for bit in _FONT[ch][r * GLYPH_WIDTH:(r + 1) * GLYPH_WIDTH])
            rows.append(tuple(row))
        glyphs.append(tuple(rows))
    return tuple(glyphs)


@lru_cache(maxsize=64)  # per device, as class_colours
def class_glyphs(num_classes: int, scale: int = 1, device: torch.device | str = "cpu") -> Tensor:
    """bool ``[N,h,w]``: each class's index as zero-padded decimal text in a 3x5 font (read-only).

    Text rather than random bitmaps, so a watermark reads like the source tags and
    captions real datasets carry; zero padding gives every class the same footprint.
    """
    import torch

    bits = torch.tensor(_glyph_bits(num_classes), dtype=torch.bool, device=device)
    return bits.repeat_interleave(scale, 1).repeat_interleave(scale, 2)


def offsets(
    position: str, batch: int, size: tuple[int, int], image: tuple[int, int],
    generator: torch.Generator | None, device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Top and left ``[B]`` of a ``size`` stamp so that it lies inside ``image``.

    ``corner`` is top-left, ``center`` rounds down, ``random`` is uniform over every
    position where the stamp fits, drawn from ``generator`` so runs repeat.
    """
    import torch

    (h, w), (height, width) = size, image
    if position == "random":
        top = torch.randint(0, height - h + 1, (batch,), generator=generator, device=device)
        left = torch.randint(0, width - w + 1, (batch,), generator=generator, device=device)
        return top, left
    if position == "center":
        top_left = ((height - h) // 2, (width - w) // 2)
    elif position == "corner":
        top_left = (0, 0)
    else:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got '{position}'")
    full = torch.full((batch,), 0, dtype=torch.long, device=device)
    return full + top_left[0], full + top_left[1]


def place(stamps: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Paste per-image stamps ``[B,h,w]`` at (top, left) on a ``height x width`` canvas.

    Returns the canvas values ``[B,H,W]`` (zero outside) and the bool footprint. One
    gather for the whole batch, so random positions cost no Python loop.
    """
    import torch

    b, h, w = stamps.shape
    dev = stamps.device
    ys = torch.arange(height, device=dev).view(1, -1, 1) - top.view(-1, 1, 1)
    xs = torch.arange(width, device=dev).view(1, 1, -1) - left.view(-1, 1, 1)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    batch = torch.arange(b, device=dev).view(-1, 1, 1)
    values = stamps[batch, ys.clamp(0, h - 1), xs.clamp(0, w - 1)]
    return torch.where(inside, values, torch.zeros((), dtype=values.dtype, device=dev)), inside
