"""Training on unspoiled data: the upper reference no leakage method can beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import hookimpl
from leakbench_builtins.methods.naive import Naive


@dataclass
class Clean(Naive):
    """Standard training on the original images (upper reference; needs leak-free data)."""

    name: ClassVar[str] = "clean"
    supervision: ClassVar[str] = "clean-data"
    spoils_training: ClassVar[bool] = False


@hookimpl
def register_methods():
    return [Clean]
