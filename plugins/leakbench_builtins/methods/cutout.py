"""Cutout (DeVries & Taylor 2017) on the spoiled data: does random occlusion alone help?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Method, hookimpl


@dataclass
class Cutout(Method):
    """Naive training with one random square erased per image (to the dataset mean); no masker, no leak mask."""

    name: ClassVar[str] = "cutout"
    size: float = 0.5  # side of the square as a fraction of the image side (DeVries & Taylor: 16 of 32 px)
    p: float = 1.0  # share of images that get a square

    def __post_init__(self) -> None:
        if not 0.0 < self.size <= 1.0:
            raise ValueError(f"size must be in (0, 1] (a fraction of the image side), got {self.size}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be between 0 and 1, got {self.p}")

    def train_step(self, ctx, x, y, leak_mask):
        with ctx.autocast():
            logits = ctx.classifier(erase(x, self.size, self.p))
            loss = ctx.loss(logits, y)
        ctx.step(loss)
        return {"loss": loss.detach(), "correct": (logits.argmax(1) == y).sum()}


def erase(x, size: float, p: float):
    """Zero (= the dataset mean in normalised space, as ``Masker.apply``) one square per image.

    The centre is uniform over the image and the square is clipped at the border, as in the
    original cutout, so squares near an edge (and the corner leak) are partly outside.
    """
    import torch

    b, _, h, w = x.shape
    dev = x.device
    side_h, side_w = max(1, round(size * h)), max(1, round(size * w))
    cy = torch.randint(0, h, (b, 1, 1), device=dev)
    cx = torch.randint(0, w, (b, 1, 1), device=dev)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    top, left = cy - side_h // 2, cx - side_w // 2
    square = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
    if p < 1.0:
        square = square & (torch.rand(b, 1, 1, device=dev) < p)
    return x * (~square).unsqueeze(1).to(x.dtype)


@hookimpl
def register_methods():
    return [Cutout]
