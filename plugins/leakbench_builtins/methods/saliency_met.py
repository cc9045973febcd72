"""MET's training loop with the gradient-saliency masker instead of a learned decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import hookimpl
from leakbench_builtins.methods.met import MET


@dataclass
class SaliencyMET(MET):
    """MET loop, masking the current classifier's top input-gradient pixels (is a learned masker needed?)."""

    name: ClassVar[str] = "saliency-met"
    default_masker: ClassVar[str] = "saliency"
    only_maskers: ClassVar[tuple[str, ...]] = ("saliency",)


@hookimpl
def register_methods():
    return [SaliencyMET]
