"""Batched augmentation on uint8 tensors, on the run's device: no per-sample Python."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip(
    images: Tensor,
    padding: int,
    flip: bool,
    generator: torch.Generator,
    masks: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Random crop with zero padding and random horizontal flip, as torchvision's
    ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip``, done as one gather.

    ``masks`` (``[B,1,H,W]``) move with their images, so a leak written before
    augmentation keeps an exact mask.
    """
    if padding == 0 and not flip:
        return images, masks
    b, _, h, w = images.shape
    dev = images.device
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if padding:
        dy = torch.randint(0, 2 * padding + 1, (b, 1), device=dev, generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (b, 1), device=dev, generator=generator)
        rows, cols = rows + dy, cols + dx
    if flip:
        flipped = torch.rand(b, 1, device=dev, generator=generator) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    batch = torch.arange(b, device=dev)[:, None, None]
    rows, cols = rows[:, :, None], cols[:, None, :]

    def gather(t: Tensor) -> Tensor:
        padded = F.pad(t, (padding,) * 4) if padding else t
        return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # [B,H,W,C] -> [B,C,H,W]

    return gather(images), (gather(masks) if masks is not None else None)


class Normalizer:
    """uint8 -> float, dataset mean/std, channels_last on CUDA: one fused multiply-add."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=device).view(1, -1, 1, 1) / std_t
        self.channels_last = device.type == "cuda"

    def __call__(self, images: Tensor) -> Tensor:
        x = torch.addcmul(self.shift, images.float(), self.scale)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
