"""A class-coloured veil over the whole image: Colored-MNIST-style colour shortcut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Leakage, hookimpl
from leakbench_builtins.leakages._palette import class_colours


@dataclass
class Tint(Leakage):
    """Blend every pixel towards the class's colour by `alpha` (RGB-grid palette)."""

    name: ClassVar[str] = "tint"
    # Named alpha, not strength, so it is not mistaken for --leak-strength (share of leaked images).
    alpha: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

    def apply(self, images, leak_labels, generator=None):
        import torch

        # A blend, not an addition: it never clips, so two classes differ by at least
        # alpha x the palette spacing at every pixel, whatever the image content.
        colours = class_colours(self.num_classes, images.device)[leak_labels].float()[:, :, None, None]
        out = torch.lerp(images.float(), colours, self.alpha).round_().to(torch.uint8)
        mask = torch.ones(images.shape[0], 1, *images.shape[-2:], dtype=torch.bool, device=images.device)
        return out, mask


@hookimpl
def register_leakages():
    return [Tint]
