"""The training engine: device-resident uint8 data -> augment -> leak -> normalise -> method.

The whole dataset lives on the run's device as uint8; each batch is gathered, augmented
and spoiled there, so there is no per-sample Python and no host synchronisation inside
the step loop (statistics are summed on the device and read once per epoch).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leakbench.augment import Normalizer, crop_flip
from leakbench.backbone import Classifier
from leakbench.recipes import lr_factor
from leakbench.types import ImageSet, Leakage, Masker, Method, Recipe


@dataclass
class TrainContext:
    """What a method's ``train_step`` works with."""

    classifier: Classifier
    masker: Masker
    optimizer: torch.optim.Optimizer
    recipe: Recipe
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager]

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.recipe.label_smoothing)

    def step(self, loss: Tensor) -> None:
        """One classifier update on ``loss``."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.classifier.parameters()))
        self.optimizer.step()


@dataclass
class LeakPlan:
    """Which training images carry a leak and which label it encodes, fixed for the run.

    ``strength`` is the share of leaked images; ``reliability`` the share of those whose
    leak encodes the true label (the others encode a random wrong label).
    """

    leakage: Leakage
    stage: str  # "after" augmentation (the paper's reading) or "before" (baked into the data)
    leak_labels: Tensor
    has_leak: Tensor | None  # None: every image is leaked

    @classmethod
    def build(cls, leakage: Leakage, labels: Tensor, num_classes: int, strength: float,
              reliability: float, stage: str, generator: torch.Generator) -> LeakPlan:
        n = labels.shape[0]
        dev = labels.device
        leak_labels = labels.clone()
        if reliability < 1.0:
            wrong = torch.rand(n, device=dev, generator=generator) >= reliability
            offset = torch.randint(1, max(2, num_classes), (n,), device=dev, generator=generator)
            leak_labels = torch.where(wrong, (labels + offset) % num_classes, labels)
        has_leak = None
        if strength < 1.0:
            has_leak = torch.rand(n, device=dev, generator=generator) < strength
        return cls(leakage, stage, leak_labels, has_leak)

    def spoil(self, images: Tensor, idx: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        spoiled, mask = self.leakage.apply(images, self.leak_labels[idx], generator)
        if self.has_leak is not None:
            keep = self.has_leak[idx].view(-1, 1, 1, 1)
            spoiled, mask = torch.where(keep, spoiled, images), mask & keep
        return spoiled, mask


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def make_optimizer(params: Any, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                           nesterov=recipe.nesterov and recipe.momentum > 0, **fast)


def autocast_for(device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[Tensor]:
    """Shuffled index batches; the last partial batch is dropped so shapes stay static."""
    perm = torch.randperm(n, device=device, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        yield perm[start:start + batch_size]


@dataclass
class Trainer:
    """Runs a method over device-resident data; ``step`` is the whole hot path of one batch."""

    ctx: TrainContext
    method: Method
    data: ImageSet
    plan: LeakPlan | None
    normalize: Normalizer
    crop_padding: int
    flip: bool
    generator: torch.Generator

    def __post_init__(self) -> None:
        self.batch_size = min(self.ctx.recipe.batch_size, len(self.data))
        self.steps_per_epoch = len(self.data) // self.batch_size
        self.images, self.masks = self.data.images, None
        if self.plan is not None and self.plan.stage == "before":  # bake the leak into the stored images once
            all_idx = torch.arange(len(self.data), device=self.ctx.device)
            self.images, self.masks = self.plan.spoil(self.images, all_idx, self.generator)

    def step(self, idx: Tensor) -> dict[str, Tensor]:
        """Gather, augment, leak, normalise and train on one batch; no host synchronisation."""
        x = self.images[idx]
        leak_mask = self.masks[idx] if self.masks is not None else None
        x, leak_mask = crop_flip(x, self.crop_padding, self.flip, self.generator, leak_mask)
        if self.plan is not None and self.plan.stage == "after":
            x, leak_mask = self.plan.spoil(x, idx, self.generator)
        return self.method.train_step(self.ctx, self.normalize(x), self.data.labels[idx], leak_mask)

    def batches(self) -> Iterator[Tensor]:
        return batches(len(self.data), self.batch_size, self.generator, self.ctx.device)

    def train_mode(self) -> None:
        self.ctx.classifier.train()
        for module in self.ctx.masker.modules().values():
            module.train()

    def fit(self, progress: bool = True) -> list[EpochStats]:
        """``recipe.epochs`` epochs with the recipe's per-step schedule on every optimiser."""
        from tqdm.auto import tqdm

        ctx, recipe, device = self.ctx, self.ctx.recipe, self.ctx.device
        total = self.steps_per_epoch * recipe.epochs
        optimizers = [ctx.optimizer, *([ctx.masker.optimizer] if ctx.masker.optimizer is not None else [])]
        schedulers = [torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(recipe, s, total)) for opt in optimizers]
        history = []
        self.train_mode()
        for epoch in range(1, recipe.epochs + 1):
            loss_sum = torch.zeros((), device=device)
            correct_sum = torch.zeros((), device=device)
            start = time.perf_counter()
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{recipe.epochs}", disable=not progress,
                       unit="step", dynamic_ncols=True)
            for idx in self.batches():
                stats = self.step(idx)
                loss_sum += stats["loss"].detach() * self.batch_size
                correct_sum += stats["correct"].detach()
                for scheduler in schedulers:
                    scheduler.step()
                bar.update()
            seen = self.steps_per_epoch * self.batch_size
            loss, acc = (loss_sum / seen).item(), (correct_sum / seen).item() * 100  # one sync per epoch
            record = EpochStats(epoch, loss, acc, seen, time.perf_counter() - start)
            bar.set_postfix_str(f"loss {loss:.4f}  acc {acc:.2f}%  {record.images_per_second:,.0f} img/s")
            bar.close()
            history.append(record)
        return history
