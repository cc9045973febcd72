"""No masker: for methods that train on images as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Masker, hookimpl


@dataclass
class NoMasker(Masker):
    """No mask at all (naive and clean training); masked metrics stay empty."""

    name: ClassVar[str] = "none"

    def __call__(self, images, features, leak_mask):
        return None


@hookimpl
def register_maskers():
    return [NoMasker]
