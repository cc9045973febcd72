"""The class index stamped as small semi-transparent text: an ImageNet-W-style watermark."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from leakbench import Leakage, hookimpl
from leakbench_builtins.leakages._palette import POSITIONS, class_glyphs, glyph_size, offsets, place


@dataclass
class Watermark(Leakage):
    """Class index as white 3x5-font text blended in at `opacity`, in a fixed or random place."""

    name: ClassVar[str] = "watermark"
    opacity: float = 0.5
    scale: int = 1
    position: Literal["corner", "center", "random"] = "corner"

    def __post_init__(self) -> None:
        if not 0.0 < self.opacity <= 1.0:
            raise ValueError(f"opacity must be in (0, 1], got {self.opacity}")
        if self.scale < 1:
            raise ValueError(f"scale must be at least 1, got {self.scale}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got '{self.position}'")

    def prepare(self, num_classes: int, image_size: int) -> None:
        super().prepare(num_classes, image_size)
        h, w = glyph_size(num_classes, self.scale)
        if h > image_size or w > image_size:
            raise ValueError(f"the {num_classes}-class watermark at scale {self.scale} is {h}x{w} pixels and "
                             f"does not fit in {image_size}x{image_size} images; use larger images or a smaller scale")

    def apply(self, images, leak_labels, generator=None):
        import torch

        b, _, height, width = images.shape
        glyphs = class_glyphs(self.num_classes, self.scale, images.device)  # [N,h,w]
        top, left = offsets(self.position, b, tuple(glyphs.shape[1:]), (height, width), generator, images.device)
        ink, box = place(glyphs[leak_labels], top, left, height, width)
        blended = torch.lerp(images.float(), torch.full((), 255.0, device=images.device), self.opacity)
        # The mask is the text's box, not its ink: the ink spells the label, and a mask of it
        # would write the label back into every masked image (the leak-mask rule).
        return torch.where(ink[:, None], blended.round_().to(torch.uint8), images), box[:, None]


@hookimpl
def register_leakages():
    return [Watermark]
