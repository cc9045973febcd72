"""Which images a run trains on and which it is scored on: train, a fixed ``tune`` split, test.

Defaults and hyperparameters are chosen on ``tune``, never on the reported ``test`` split
(the dataset's official test set; digits: its fixed 20%). ``tune`` is carved here, in the
core, from whatever a dataset's ``load("train")`` returns, so every dataset plugin, built-in
or outside, gets one without writing code. It is stratified and fixed: the images are
picked by an integer hash of their index, not by a run's generator or a library's random
stream, so every user, seed, device and torch release gets the same tune images.

- ``--eval-split test`` (leaderboards): train on the whole training split, score on test.
- ``--eval-split tune``: train on training minus tune, score on tune.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakbench.data.hashing import GOLDEN32, MASK32, hash32

if TYPE_CHECKING:
    from torch import Tensor

    from leakbench.types import ImageSet

EVAL_SPLITS = ("test", "tune")
TUNE_FRACTION = 0.1  # of each class of the training split


def tune_mask(labels: Tensor, fraction: float = TUNE_FRACTION) -> Tensor:
    """bool ``[N]``: the tune images, ``round(fraction x count)`` of each class (at least one of
    every class with two or more images), the ones whose hashed index ranks lowest."""
    import torch

    labels = labels.cpu()
    n = labels.shape[0]
    key = hash32(torch.arange(n, dtype=torch.int64) * GOLDEN32 & MASK32)
    order = torch.argsort(labels * (1 << 32) + key)  # by class, then by hashed index
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_labels]  # position within its class
    take = torch.where(counts >= 2, (counts * fraction).round().clamp(min=1), torch.zeros_like(counts))
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[order] = rank < take[sorted_labels]
    return chosen


def split_for(train: ImageSet, test: ImageSet | None, eval_split: str) -> tuple[ImageSet, ImageSet]:
    """(what to train on, what to score on) for ``eval_split``."""
    if eval_split == "test":
        assert test is not None
        return train, test
    held = tune_mask(train.labels).to(train.labels.device)
    return _subset(train, ~held), _subset(train, held)


def _subset(data: ImageSet, keep: Tensor) -> ImageSet:
    from leakbench.types import ImageSet

    return ImageSet(data.images[keep], data.labels[keep], data.class_names)
