"""A counter-based integer hash for choices that must not depend on any random stream.

The tune split picks its images by a hash of their index and the noise leakage draws its
class patterns by a hash of (class, pixel): neither may move with a run's seed, a device or a
torch release, and neither may need a stored table. One 32-bit mix serves both, exact on
int64 tensors on every device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

MASK32 = 0xFFFFFFFF
GOLDEN32 = 0x9E3779B1  # multiplies a counter before mixing, so neighbouring counters spread out


def hash32(x: Tensor) -> Tensor:
    """lowbias32 of the low 32 bits of ``x`` (int64 in, int64 in [0, 2**32) out)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    return (x >> 16) ^ x
