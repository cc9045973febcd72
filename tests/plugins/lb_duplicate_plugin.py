"""A plugin that reuses a built-in name: the registry must refuse it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Leakage, hookimpl


@dataclass
class AnotherCorner(Leakage):
    """Same name as the built-in."""

    name: ClassVar[str] = "binary-corner"


@hookimpl
def register_leakages():
    return [AnotherCorner]
