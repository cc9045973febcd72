"""Named optimisation recipes, shared by every method so leaderboard rows compare."""

from __future__ import annotations

import dataclasses
import math

from leakbench.errors import LeakbenchError, closest
from leakbench.types import Dataset, Recipe

RECIPES: dict[str, Recipe] = {
    # met-spec.md §3: kuangliu/pytorch-cifar as of 2019 (SGD 0.1/0.9/5e-4, batch 128, lr 0.1,
    # x0.1 at epoch 150 and again at 250), which the MET paper most likely used, for the 400
    # CIFAR-10 epochs the paper trained. Datasets may shorten it (Tiny ImageNet: 90 epochs).
    "paper": Recipe("paper", epochs=400, batch_size=128, lr=0.1, schedule="step", milestones=(0.375, 0.625)),
    # perf-anchors.md §4: batch 512, Nesterov, 20% linear warm-up then linear decay.
    "fast": Recipe(
        "fast", epochs=30, batch_size=512, lr=0.2, nesterov=True, schedule="onecycle",
        warmup_fraction=0.2, label_smoothing=0.1,
    ),
}


def resolve_recipe(
    dataset: Dataset, name: str | None, epochs: int | None, batch_size: int | None, lr: float | None
) -> Recipe:
    """The named (or the dataset's default) recipe with command-line overrides, validated."""
    available = {**RECIPES, **dataset.recipes}
    name = name or dataset.default_recipe
    if name not in available:
        raise LeakbenchError(f"unknown recipe '{name}'{closest(name, available)}; available: {', '.join(available)}")
    overrides = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr}.items() if v is not None}
    recipe = dataclasses.replace(available[name], **overrides)
    if recipe.epochs < 1:
        raise LeakbenchError(f"--epochs must be at least 1, got {recipe.epochs}")
    if recipe.batch_size < 1:
        raise LeakbenchError(f"--batch-size must be at least 1, got {recipe.batch_size}")
    if not (math.isfinite(recipe.lr) and recipe.lr > 0):  # nan fails > 0, inf does not
        raise LeakbenchError(f"--lr must be a positive finite number, got {recipe.lr}")
    return recipe


def lr_factor(recipe: Recipe, step: int, total_steps: int) -> float:
    """Multiplier on the base learning rate at ``step`` (0-based), per the recipe's schedule."""
    t = step / max(1, total_steps)
    warmup = recipe.warmup_fraction * total_steps
    if recipe.schedule == "onecycle":
        if step < warmup:
            return 0.2 + 0.8 * step / warmup
        return max(0.0, (total_steps - step) / max(1.0, total_steps - warmup))
    factor = min(1.0, 0.2 + 0.8 * step / warmup) if step < warmup else 1.0
    if recipe.schedule == "step":
        return factor * 0.1 ** sum(t >= m for m in recipe.milestones)
    if recipe.schedule == "cosine":
        return factor * 0.5 * (1 + math.cos(math.pi * t))
    return factor
