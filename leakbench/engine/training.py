"""The training engine: device-resident uint8 data -> augment -> leak -> normalise -> method.

The whole dataset lives on the run's device as uint8; each batch is gathered, augmented
and spoiled there, so there is no per-sample Python and no host synchronisation inside
the step loop (statistics are summed on the device and read once per epoch).

A method's schedule is a list of stages (``Method.stages``; one stage for most methods). The
engine runs their epochs with a fresh schedule and optimiser state per stage and calls each
stage's ``begin`` hook at its boundary with the trainer, whose tools (``predict``,
``training_images``, ``held_out_clean``, ``reset_classifier``, ``new_classifier``,
``make_optimizer``, ``set_sample_weights``) do the passes over the data a multi-stage method
needs. The method's own networks, optimisers and state travel in the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leakbench.engine.augment import Normalizer, crop_flip
from leakbench.engine.backbone import Classifier
from leakbench.engine.recipes import lr_factor
from leakbench.errors import LeakbenchError
from leakbench.types import ImageSet, Leakage, Masker, Method, Recipe, Stage


@dataclass
class TrainContext:
    """What a method's ``train_step`` works with."""

    classifier: Classifier
    masker: Masker
    optimizer: torch.optim.Optimizer
    recipe: Recipe
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager]
    # Set by the engine before every step (the batch's own facts, no host sync):
    stage: str = ""  # the name of the stage being trained (Method.stages)
    index: Tensor | None = None  # [B] indices of the batch's images in the training set (per-image state)
    leak_labels: Tensor | None = None  # [B] the label each image's leak encodes: leak-label methods only
    has_leak: Tensor | None = None  # [B] bool, which images carry a leak: leak-label methods only

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
    stage: str = ""  # the method's stage this epoch belonged to

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


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device,
            weights: Tensor | None = None) -> Iterator[Tensor]:
    """Shuffled index batches; the last partial batch is dropped so shapes stay static. With
    per-image ``weights`` an epoch is as many images drawn with replacement in proportion to them."""
    if weights is None:
        perm = torch.randperm(n, device=device, generator=generator)
    else:
        perm = torch.multinomial(weights, n, replacement=True, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        yield perm[start:start + batch_size]


def resolve_stages(method: Method, epochs: int) -> list[Stage]:
    """``method.stages(epochs)`` checked: a non-empty list of stages, epochs >= 0, at least one
    with epochs, summing to ``epochs`` (so every method gets the run's number of passes)."""
    try:
        stages = list(method.stages(epochs))
    except ValueError as exc:
        raise LeakbenchError(f"method '{method.spec()}': {exc}") from None
    if not stages or not all(isinstance(s, Stage) and isinstance(s.epochs, int) and s.epochs >= 0 for s in stages):
        raise LeakbenchError(f"method '{method.spec()}' must return Stage objects with epochs >= 0 from stages()")
    if sum(s.epochs for s in stages) != epochs or not any(s.epochs for s in stages):
        raise LeakbenchError(f"method '{method.spec()}': its stages ({describe_stages(stages)}) must add up to the "
                             f"run's {epochs} epochs")
    if len({s.name for s in stages}) != len(stages):
        raise LeakbenchError(f"method '{method.spec()}': stage names must be unique ({describe_stages(stages)})")
    return stages


def describe_stages(stages: list[Stage]) -> str:
    """``identify:3+upweighted:12``: the row's ``stages`` cell."""
    return "+".join(f"{s.name}:{s.epochs}" for s in stages)


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
    # a fresh, independently initialised classifier like the run's (Trainer.new_classifier); None: not offered
    build_classifier: Callable[[], torch.nn.Module] | None = None

    def __post_init__(self) -> None:
        self.batch_size = min(self.ctx.recipe.batch_size, len(self.data))
        self.steps_per_epoch = len(self.data) // self.batch_size
        self.images, self.masks = self.data.images, None
        self._seed = self.generator.initial_seed()  # before any draw: fixed streams for the tools' passes
        if self.plan is not None and self.plan.stage == "before":  # bake the leak into the stored images once
            all_idx = torch.arange(len(self.data), device=self.ctx.device)
            self.images, self.masks = self.plan.spoil(self.images, all_idx, self.generator)
        self.stages = resolve_stages(self.method, self.ctx.recipe.epochs)
        self.stage_starts = [0, *itertools.accumulate(s.epochs for s in self.stages)][:-1]
        self.sample_weights: Tensor | None = None  # per-image sampling weights (set_sample_weights)
        self._initial: dict[str, Tensor] | None = None
        if len(self.stages) > 1:  # what reset_classifier goes back to
            self._initial = {k: v.detach().clone() for k, v in self.base_classifier().state_dict().items()}
        # leak labels reach a method only if it declares that supervision
        self._leak_labels = self.plan is not None and self.method.supervision == "leak-label"
        if self._leak_labels and self.plan.has_leak is None:
            self._all_leaked = torch.ones(len(self.data), dtype=torch.bool, device=self.ctx.device)
        self.method.build(self)
        masker_optimizer = self.ctx.masker.optimizer
        self.optimizers = [self.ctx.optimizer, *([masker_optimizer] if masker_optimizer is not None else []),
                           *self.method.optimizers()]
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
        self.ctx.index = idx
        if self._leak_labels:
            self.ctx.leak_labels = self.plan.leak_labels[idx]
            self.ctx.has_leak = (self.plan.has_leak if self.plan.has_leak is not None else self._all_leaked)[idx]
        return self.method.train_step(self.ctx, self.normalize(x), self.data.labels[idx], leak_mask)

    def batches(self) -> Iterator[Tensor]:
        return batches(len(self.data), self.batch_size, self.generator, self.ctx.device, self.sample_weights)

    def train_mode(self) -> None:
        self.ctx.classifier.train()
        for module in (*self.ctx.masker.modules().values(), *self.method.modules().values()):
            module.train()

    def stage_of(self, epoch: int) -> Stage:
        """The stage that trains ``epoch`` (1-based)."""
        return next(s for s, start in zip(self.stages, self.stage_starts, strict=True)
                    if start < epoch <= start + s.epochs)

    def schedulers(self) -> list[torch.optim.lr_scheduler.LRScheduler]:
        """The recipe's per-step schedule on every optimiser, restarted at each stage (one stage:
        over the whole run, as always), built once (a checkpoint restores their step counts into
        these same objects)."""
        if self._schedulers is None:
            recipe, per_epoch = self.ctx.recipe, self.steps_per_epoch
            spans = [(start * per_epoch, s.epochs * per_epoch)
                     for s, start in zip(self.stages, self.stage_starts, strict=True) if s.epochs]

            def factor(step: int) -> float:
                start, length = next(span for span in reversed(spans) if step >= span[0])
                return lr_factor(recipe, step - start, length)

            self._schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in self.optimizers]
        return self._schedulers

    def _begin_stages_at(self, boundary: int) -> None:
        """Start the stages that begin after ``boundary`` epochs: fresh optimiser state (a stage
        is a training run of its own), then the stage's ``begin`` hook."""
        for stage, start in zip(self.stages, self.stage_starts, strict=True):
            if start != boundary:
                continue
            if stage.epochs and boundary > 0:
                for opt in self.optimizers:
                    opt.state.clear()
            if stage.begin is not None:
                stage.begin(self)
                self.train_mode()

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
            self._begin_stages_at(epoch - 1)
            stage = self.stage_of(epoch)
            self.ctx.stage = stage.name
            loss_sum = torch.zeros((), device=device)
            correct_sum = torch.zeros((), device=device)
            extra_sums: dict[str, Tensor] = {}
            lrs = [float(opt.param_groups[0]["lr"]) for opt in self.optimizers]
            start = time.perf_counter()
            named = f" {stage.name}" if len(self.stages) > 1 else ""
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{recipe.epochs}{named}", disable=not progress,
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
                                dict(zip(extra_sums, extras, strict=True)), stage.name)
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
        self._begin_stages_at(recipe.epochs)  # stages of 0 epochs at the end: a final fit
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
            "method": {"modules": {name: module.state_dict() for name, module in self.method.modules().items()},
                       "state": self.method.state_dict()},
            "sample_weights": self.sample_weights,
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
            saved = state.get("method", {"modules": {}, "state": {}})
            own = self.method.modules()
            if set(own) != set(saved["modules"]):
                raise ValueError(f"method networks {sorted(saved['modules'])}, this run has {sorted(own)}")
            for name, module in own.items():
                module.load_state_dict(saved["modules"][name])
            self.method.load_state_dict(saved["state"])
            weights = state.get("sample_weights")
            self.sample_weights = None if weights is None else weights.to(self.ctx.device)
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

    # ---- tools for a method's build() and its stages' begin hooks (they may sync the host)

    def base_classifier(self) -> torch.nn.Module:
        """The classifier being trained, never its compiled wrapper (for weights and feature passes)."""
        return getattr(self.ctx.classifier, "_orig_mod", self.ctx.classifier)  # not the compiled wrapper

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The recipe's optimiser over ``params`` (return it from ``Method.optimizers`` so the
        engine schedules and checkpoints it)."""
        return make_optimizer(params, self.ctx.recipe, self.ctx.device)

    def new_classifier(self) -> torch.nn.Module:
        """A second classifier of the run's architecture, independently initialised, on the device
        (drawn from the run's seeded stream at build time, so a resumed run draws the same one)."""
        if self.build_classifier is None:
            raise LeakbenchError(f"method '{self.method.name}' needs a second classifier; this trainer offers none")
        return self.build_classifier()

    def reset_classifier(self) -> None:
        """Put the classifier back to its weights before training ("a new model from scratch",
        the same initialisation, as pretrained-from-the-same-weights runs do)."""
        if self._initial is None:
            raise LeakbenchError(f"method '{self.method.name}': reset_classifier needs a multi-stage schedule")
        self.base_classifier().load_state_dict(self._initial)

    def set_sample_weights(self, weights: Tensor | None) -> None:
        """From the next epoch on, draw each epoch's images with replacement in proportion to
        ``weights`` ([N] over the training set; None: every image once per epoch)."""
        if weights is not None:
            weights = weights.detach().to(self.ctx.device, torch.float32)
            if weights.shape != (len(self.data),) or not bool((weights >= 0).all()) or not bool(weights.sum() > 0):
                raise LeakbenchError(f"method '{self.method.name}': sample weights must be {len(self.data)} "
                                     "non-negative numbers, not all zero")
        self.sample_weights = weights

    def training_images(self, spoiled: bool = True) -> tuple[Tensor, Tensor | None]:
        """Every training image, unaugmented, uint8 ``[N,3,H,W]``, with the leak as the run plans it
        (``spoiled``; random placements drawn from a fixed stream, so the pass is repeatable) or as
        loaded; and its bool leak mask (None when not spoiled)."""
        if not spoiled or self.plan is None:
            return self.data.images, None
        if self.masks is not None:  # leak baked in before augmentation
            return self.images, self.masks
        generator = torch.Generator(device=self.ctx.device).manual_seed(self._seed + 1)
        return self.plan.spoil(self.data.images, torch.arange(len(self.data), device=self.ctx.device), generator)

    @torch.no_grad()
    def predict(self, images: Tensor, model: torch.nn.Module | None = None, features: bool = False) -> Tensor:
        """float32 logits (or, with ``features``, the pre-logit features) of ``model`` (default: the
        classifier) in eval mode on uint8 ``images``, normalised as in training, in evaluation
        batches; train mode is restored after."""
        model = self.base_classifier() if model is None else model
        was_training = model.training
        model.eval()
        out = []
        try:
            for chunk in images.split(self.ctx.recipe.eval_batch_size):
                with self.ctx.autocast():
                    x = self.normalize(chunk)
                    if features:
                        net = getattr(model, "model", model)
                        out.append(net.forward_head(net.forward_features(x), pre_logits=True).float())
                    else:
                        out.append(model(x).float())
        finally:
            model.train(was_training)
        return torch.cat(out)

    def held_out_clean(self) -> Tensor:
        """Indices of the leak-free images a ``clean-data`` method may use: the ``tune`` carve of the
        images this run trains on (``leakbench.data.splits``). Scored on test, that is the tune split
        itself; scored on tune, a second carve of the rest, so never an image the run is scored on.
        The images are ``self.data.images[idx]``: never spoiled."""
        from leakbench.data.splits import tune_mask

        return tune_mask(self.data.labels).nonzero().flatten().to(self.ctx.device)
