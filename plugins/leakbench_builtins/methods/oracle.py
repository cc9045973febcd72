"""MET's training loop with the oracle masker: what a perfect masker would give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import hookimpl
from leakbench_builtins.methods.met import MET


@dataclass
class Oracle(MET):
    """MET loop with the oracle masker (exact leak mask): the masking upper reference."""

    name: ClassVar[str] = "oracle"
    default_masker: ClassVar[str] = "oracle"
    supervision: ClassVar[str] = "leak-mask"
    only_maskers: ClassVar[tuple[str, ...]] = ("oracle",)


@hookimpl
def register_methods():
    return [Oracle]
