"""The oracle: masks exactly the pixels the leakage wrote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Masker, hookimpl


@dataclass
class OracleMasker(Masker):
    """Masks exactly the leak mask from the generator (an upper reference, needs the mask)."""

    name: ClassVar[str] = "oracle"
    supervision: ClassVar[str] = "leak-mask"

    def __call__(self, images, features, leak_mask):
        if leak_mask is None:
            raise ValueError("the oracle masker needs the leak mask, but this batch carries none")
        return leak_mask.to(images.dtype)


@hookimpl
def register_maskers():
    return [OracleMasker]
