"""The training engine: device-resident uint8 data -> augment -> leak -> normalise -> method.

The whole dataset lives on the run's device as uint8; each batch is gathered, augmented
and spoiled there, so there is no per-sample Python and no host synchronisation inside
the step loop (statistics are summed on the device and read once per epoch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leakbench.augment import Normalizer, crop_flip
from leakbench.backbone import Classifier
from leakbench.errors import LeakbenchError
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


class NonFiniteLoss(LeakbenchError):
    """The training loss became nan or inf: nothing after it can be trusted, so the run stops."""

    def __init__(self, message: str, stats: EpochStats) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass
class EpochStats:
    """One epoch's summary, read at the epoch's single host sync; plain values only, so a
    history goes into a ``weights_only`` checkpoint and an ``epochs.jsonl`` line as it is."""

    epoch: int
    loss: float
    accuracy: float
    images: int
    seconds: float
    lrs: list[float] = field(default_factory=list)  # each optimiser's learning rate at the epoch's start
    extras: dict[str, float] = field(default_factory=dict)  # per-step means of other scalar stats a method returns

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EpochStats:
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


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
        masker_optimizer = self.ctx.masker.optimizer
        self.optimizers = [self.ctx.optimizer, *([masker_optimizer] if masker_optimizer is not None else [])]
        self._schedulers: list[torch.optim.lr_scheduler.LRScheduler] | None = None
        self.epoch = 0  # epochs finished (a checkpoint may set it)
        self.history: list[EpochStats] = []

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

    def schedulers(self) -> list[torch.optim.lr_scheduler.LRScheduler]:
        """The recipe's per-step schedule on every optimiser, built once (a checkpoint restores
        their step counts into these same objects)."""
        if self._schedulers is None:
            recipe, total = self.ctx.recipe, self.steps_per_epoch * self.ctx.recipe.epochs
            self._schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(recipe, s, total))
                                for opt in self.optimizers]
        return self._schedulers

    def fit(self, progress: bool = True, on_epoch: Callable[[EpochStats], None] | None = None,
            stop: Callable[[], None] | None = None) -> list[EpochStats]:
        """Train from ``self.epoch`` (0, or where a checkpoint left off) to ``recipe.epochs``.

        ``on_epoch`` sees each finished epoch after the trainer's state has moved past it (the
        moment a checkpoint is exact); ``stop`` is called before every step and raises to stop
        there (a signal). The loss is read once per epoch, at the epoch's one host sync; a nan
        or inf loss stops the run there with ``NonFiniteLoss``.
        """
        from tqdm.auto import tqdm

        recipe, device = self.ctx.recipe, self.ctx.device
        schedulers = self.schedulers()
        self.train_mode()
        for epoch in range(self.epoch + 1, recipe.epochs + 1):
            loss_sum = torch.zeros((), device=device)
            correct_sum = torch.zeros((), device=device)
            extra_sums: dict[str, Tensor] = {}
            lrs = [float(opt.param_groups[0]["lr"]) for opt in self.optimizers]
            start = time.perf_counter()
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{recipe.epochs}", disable=not progress,
                       unit="step", dynamic_ncols=True)
            for idx in self.batches():
                if stop is not None:
                    stop()
                stats = self.step(idx)
                loss_sum += stats["loss"].detach() * self.batch_size
                correct_sum += stats["correct"].detach()
                for key, value in stats.items():
                    if key not in ("loss", "correct") and isinstance(value, Tensor) and value.dim() == 0:
                        extra_sums[key] = extra_sums.get(key, 0) + value.detach().float()
                for scheduler in schedulers:
                    scheduler.step()
                bar.update()
            seen = self.steps_per_epoch * self.batch_size
            means = torch.stack([loss_sum / seen, correct_sum / seen,
                                 *(v / self.steps_per_epoch for v in extra_sums.values())])
            loss, share, *extras = means.tolist()  # the one host sync of the epoch
            record = EpochStats(epoch, loss, share * 100, seen, time.perf_counter() - start, lrs,
                                dict(zip(extra_sums, extras, strict=True)))
            bar.set_postfix_str(f"loss {loss:.4f}  acc {record.accuracy:.2f}%  {record.images_per_second:,.0f} img/s")
            bar.close()
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"epoch {epoch}/{recipe.epochs} of method '{self.method.spec()}': the training "
                                    f"loss is {loss}; the run stops without a leaderboard row (a lower --lr may help)",
                                    record)
            self.epoch = epoch
            self.history.append(record)
            if on_epoch is not None:
                on_epoch(record)
        return self.history

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the rest of training, taken at an epoch boundary: weights,
        optimiser and schedule state, every random stream (the run's generator, generators a
        plugin owns, torch's global CPU and CUDA states) and the history. Tensors and plain
        lists and dicts only, so ``torch.load(..., weights_only=True)`` reads it back."""
        classifier = getattr(self.ctx.classifier, "_orig_mod", self.ctx.classifier)  # not the compiled wrapper
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        return {
            "epoch": self.epoch, "total_epochs": self.ctx.recipe.epochs,
            "classifier": classifier.state_dict(),
            "masker": {name: module.state_dict() for name, module in self.ctx.masker.modules().items()},
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers()],
            "generator": self.generator.get_state(),
            "plugin_generators": {name: gen.get_state() for name, gen in self._plugin_generators().items()},
            "cpu_rng": torch.get_rng_state(), "cuda_rng": cuda,
            "history": [h.as_dict() for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put the trainer back where ``state_dict`` was taken; LeakbenchError if it does not fit."""
        try:
            if int(state["total_epochs"]) != self.ctx.recipe.epochs or not 0 <= int(state["epoch"]) <= \
                    self.ctx.recipe.epochs:
                raise ValueError(f"it is epoch {state['epoch']} of {state['total_epochs']}, this run has "
                                 f"{self.ctx.recipe.epochs} epochs")
            classifier = getattr(self.ctx.classifier, "_orig_mod", self.ctx.classifier)
            classifier.load_state_dict(state["classifier"])
            modules = self.ctx.masker.modules()
            if set(modules) != set(state["masker"]):
                raise ValueError(f"masker networks {sorted(state['masker'])}, this run has {sorted(modules)}")
            for name, module in modules.items():
                module.load_state_dict(state["masker"][name])
            schedulers = self.schedulers()  # built first: building one sets its optimiser's lr to the step-0 value
            for opt, saved in zip(self.optimizers, state["optimizers"], strict=True):
                opt.load_state_dict(saved)
            for scheduler, saved in zip(schedulers, state["schedulers"], strict=True):
                scheduler.load_state_dict(saved)
            generators = self._plugin_generators()
            if set(generators) != set(state["plugin_generators"]):
                raise ValueError(f"plugin random streams {sorted(state['plugin_generators'])}, this run has "
                                 f"{sorted(generators)}")
            for name, gen in generators.items():
                gen.set_state(state["plugin_generators"][name].cpu())
            self.generator.set_state(state["generator"].cpu())
            torch.set_rng_state(state["cpu_rng"].cpu())
            if state["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
            history = [EpochStats.from_dict(h) for h in state["history"]]
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LeakbenchError(f"the checkpoint does not fit this run: {message}") from None
        self.epoch, self.history = int(state["epoch"]), history

    def _plugin_generators(self) -> dict[str, torch.Generator]:
        """Random streams plugins keep as attributes (the random masker's own generator), by
        owner and attribute name: restored with the rest so a resumed run draws the same masks."""
        owners = {"masker": self.ctx.masker, "method": self.method,
                  **({"leakage": self.plan.leakage} if self.plan is not None else {})}
        return {f"{kind}.{attr}": value for kind, owner in owners.items()
                for attr, value in sorted(vars(owner).items()) if isinstance(value, torch.Generator)}
