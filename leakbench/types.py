"""Base classes for the plugin kinds (the four pipeline stages, in order, then the sweep's
executors) and the data they exchange.

Every plugin is a dataclass: its fields are the options users set on the command line
(``--leakage binary-corner:stage=before``), ``__post_init__`` validates them, and the
first line of its docstring is what ``leakbench list`` shows. Tensors are batch-first and
live on whatever device the run uses; torch is imported lazily so listing stays fast.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from leakbench.errors import LeakbenchError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch
    from torch import Tensor, nn

    from leakbench.runs.interrupts import StopRequest
    from leakbench.runs.sweep import Cell

# What a method (or masker) needs beyond the spoiled training set: leak-label = which images carry
# a leak and which label it encodes; leak-mask = where the leak is; clean-data = leak-free images.
SUPERVISION = ("none", "leak-label", "leak-mask", "clean-data")


@dataclass
class Plugin:
    """Common behaviour: a name, a one-line summary, typed options."""

    kind: ClassVar[str] = "plugin"
    name: ClassVar[str] = ""
    supervision: ClassVar[str] = "none"
    # the option a bare value sets, so ``processes:2`` means ``processes:workers=2`` ("": none)
    positional: ClassVar[str] = ""

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def from_options(cls, raw: dict[str, str]) -> Plugin:
        """Build from ``key=value`` strings, coercing each to its field's type."""
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in cls.options()}
        kwargs: dict[str, Any] = {}
        for key, text in raw.items():
            if key not in known:
                have = ", ".join(known) or "none"
                raise LeakbenchError(f"{cls.kind} '{cls.name}' has no option '{key}' (options: {have})")
            kwargs[key] = _coerce(text, hints[key], f"{cls.kind} '{cls.name}' option '{key}'")
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise LeakbenchError(f"{cls.kind} '{cls.name}': {exc}") from exc

    def params(self) -> dict[str, Any]:
        """The options as they enter the experiment's identity (``experiment_id``, ``config_hash``).
        A plugin with an option that only says where to look something up overrides this to
        record what it looked up instead (the random masker's ``match_run``)."""
        return {f.name: getattr(self, f.name) for f in self.options()}

    def spec(self) -> str:
        """``name`` plus the options that differ from their defaults: a stable row key."""
        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in self.options()
            if f.default is not dataclasses.MISSING and getattr(self, f.name) != f.default
        ]
        return self.name + (":" + ",".join(changed) if changed else "")


def _coerce(text: str, hint: Any, what: str) -> Any:
    import math

    target = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # Optional[X] -> X
        target = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(target) is typing.Literal:
        if text not in typing.get_args(target):
            raise LeakbenchError(f"{what} must be one of {', '.join(map(str, typing.get_args(target)))}, got '{text}'")
        return text
    try:
        if target is bool:
            lowered = text.lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(text)
            return lowered in ("1", "true", "yes")
        if target in (int, float, str):
            value = target(text)
            if target is float and not math.isfinite(value):  # nan/inf pass float() but break any option
                raise LeakbenchError(f"{what} must be a finite number, got '{text}'")
            return value
    except ValueError:
        raise LeakbenchError(f"{what} expects {target.__name__}, got '{text}'") from None
    return text


@dataclass
class ImageSet:
    """One split in memory: uint8 ``[N,3,H,W]`` images, int64 ``[N]`` labels, class names."""

    images: Tensor
    labels: Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.class_names)


@dataclass
class Recipe:
    """Optimisation settings, identical for every method so leaderboard rows compare."""

    name: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "step"  # constant | step | cosine | onecycle
    milestones: tuple[float, ...] = (0.375, 0.625)  # "step": lr x0.1 at these shares of training
    warmup_fraction: float = 0.0  # share of all steps spent warming up linearly from 0.2x
    label_smoothing: float = 0.0
    masker_lr: float = 1e-3
    masker_weight_decay: float = 1e-4
    eval_batch_size: int = 1000
    # A recipe sized for a machine (a CPU track) also names the scale it was sized at: the
    # backbone and dataset options it applies unless the user gives them (--backbone,
    # --dataset NAME:key=value). Their effect is in the resolved backbone and dataset, which
    # the row and the experiment identity record, so they are not part of the recipe's identity.
    backbone: str | None = None
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The fields that shape training (milestones only matter to a step schedule), so
        experiments keep their config hash when a field they do not use is added."""
        fields = {k: v for k, v in self.__dict__.items() if k not in ("backbone", "dataset_options")}
        if self.schedule != "step":
            fields.pop("milestones")
        return fields


@dataclass
class Dataset(Plugin):
    """Base class: loads uint8 splits and knows how its images should be trained on."""

    kind: ClassVar[str] = "dataset"
    mean: ClassVar[tuple[float, float, float]] = (0.485, 0.456, 0.406)
    std: ClassVar[tuple[float, float, float]] = (0.229, 0.224, 0.225)
    crop_padding: ClassVar[int] = 4
    flip: ClassVar[bool] = True
    default_recipe: ClassVar[str] = "paper"
    recipes: ClassVar[dict[str, Recipe]] = {}
    # what --backbone means when not given: any timm name with options, e.g. "resnet18:width=16"
    default_backbone: ClassVar[str] = "resnet18"

    def load(self, split: str, root: Path) -> ImageSet:
        """Return ``split`` ('train' or 'val') from ``root``; raise LeakbenchError if absent."""
        raise NotImplementedError

    def identity(self, root: Path) -> dict[str, Any]:
        """What, beyond the options, tells this data apart from other data under the same
        name (a folder, a source checksum); it enters the experiment's identity, so rows
        from two different image folders are never averaged. Embedded data: nothing."""
        return {}

    def describe(self) -> str:
        """Recipe notes for ``leakbench list --verbose`` and the leaderboard row."""
        return ""


@dataclass
class Leakage(Plugin):
    """Base class: writes a label-encoding cue into uint8 images and returns its mask."""

    kind: ClassVar[str] = "leakage"
    num_classes: int = field(default=0, init=False, repr=False)
    image_size: int = field(default=0, init=False, repr=False)

    def prepare(self, num_classes: int, image_size: int) -> None:
        """Fix the class count and image size; raise ValueError if the leak cannot fit."""
        self.num_classes, self.image_size = num_classes, image_size

    def apply(
        self, images: Tensor, leak_labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return (spoiled uint8 images, bool ``[B,1,H,W]`` leak mask).

        The leak-mask rule: the mask marks the region where the leak *may* be written for
        each image, and for the same images and the same random state it is identical
        whatever ``leak_labels`` say; every changed pixel lies inside it. Why: maskers
        replace masked pixels by the dataset mean, so the classifier sees a mask's shape;
        a mask shaped like the label (a glyph's ink, a dot whose column is the label) would
        write the label back into every masked image. Runs check it on a probe batch
        before training (``leakbench.engine.leak_rule``) and refuse a leakage that breaks it.
        """
        raise NotImplementedError


@dataclass
class Masker(Plugin):
    """Base class: produces a soft mask in [0, 1] of shape ``[B,1,H,W]``, or None."""

    kind: ClassVar[str] = "masker"
    learned: ClassVar[bool] = False
    optimizer: ClassVar[Any] = None  # learned maskers set their own in build(); the engine schedules it

    def build(self, classifier: nn.Module, image_size: int, recipe: Recipe, device: torch.device) -> None:
        """Create networks and optimisers (learned maskers only)."""

    def __call__(self, images: Tensor, features: list[Tensor], leak_mask: Tensor | None) -> Tensor | None:
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """Networks to checkpoint and to switch between train and eval mode."""
        return {}

    def objective(self, mask: Tensor, logits_clean: Tensor, logits_masked: Tensor, labels: Tensor) -> Tensor:
        """Learned maskers: the loss the masker minimises, given both classifier outputs."""
        raise NotImplementedError(f"masker '{self.name}' is not learned")

    def gradients(self, loss: Tensor) -> list[Tensor]:
        """Learned maskers: gradients of ``loss`` w.r.t. the masker's own parameters only.

        Taken before the classifier's next step, because that step changes in place the
        weights the graph saved (CASME's order fails on PyTorch >= 1.5, met-spec §1.5).
        """
        raise NotImplementedError(f"masker '{self.name}' is not learned")

    def apply_gradients(self, grads: list[Tensor]) -> None:
        """Learned maskers: one optimiser step with the given gradients."""
        raise NotImplementedError(f"masker '{self.name}' is not learned")

    @staticmethod
    def apply(x: Tensor, m: Tensor) -> Tensor:
        """Mask normalised images: masked pixels become the dataset mean (CASME's choice),
        the same in training, in "Masked" evaluation and for the oracle."""
        return x * (1 - m)


@dataclass
class Method(Plugin):
    """Base class: a training procedure that sees each prepared batch and updates models."""

    kind: ClassVar[str] = "method"
    spoils_training: ClassVar[bool] = True
    default_masker: ClassVar[str] = "none"
    uses_masker: ClassVar[bool] = False
    only_maskers: ClassVar[tuple[str, ...]] = ()  # non-empty: the maskers this method is defined with

    def train_step(self, ctx: Any, x: Tensor, y: Tensor, leak_mask: Tensor | None) -> dict[str, Tensor]:
        """Update the classifier on one batch; return detached stats (``loss``, ``correct``).

        ``ctx.stage`` names the stage being trained, ``ctx.index`` holds the batch's indices
        into the training set (for per-image state); ``ctx.leak_labels``/``ctx.has_leak`` are
        set only for methods that declare ``leak-label`` supervision (None otherwise).
        """
        raise NotImplementedError

    # ---- multi-stage methods: everything below has a default, so a one-stage method writes
    # only ``train_step``. The engine keeps data, augmentation, the leak, the schedule, progress
    # and checkpoints; see ``leakbench.engine.training.Trainer`` for the tools a hook gets.

    def stages(self, epochs: int) -> list[Stage]:
        """The schedule: stages whose epochs sum to the recipe's ``epochs`` (every method gets the
        same number of passes over the training set; the row's ``stages`` column shows the split).
        Raise ValueError when ``epochs`` cannot be split (the run stops before any data is loaded).
        Each stage with epochs gets a fresh learning-rate schedule (the recipe's shape over the
        stage) and fresh optimiser state; a stage with 0 epochs is only its ``begin`` hook (a
        final fit)."""
        return [Stage("train", epochs)]

    def build(self, trainer: Any) -> None:
        """Create what the method owns (a second network, per-image buffers) on the trainer's
        device; called once per session, also before a checkpoint is loaded into it."""

    def modules(self) -> dict[str, nn.Module]:
        """The method's own networks: checkpointed, and put in train mode with the classifier."""
        return {}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The method's own optimisers: the engine schedules them with the classifier's and
        checkpoints them (make them with ``trainer.make_optimizer``)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """The method's own state besides modules and optimisers (an error set, group weights,
        per-image losses): tensors and plain values, saved with the run's checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what ``state_dict`` gave (after ``build``); ValueError if it does not fit."""
        if state:
            raise ValueError(f"method '{self.name}' keeps no state, but the checkpoint has {sorted(state)}")

    def clean_images(self, train_size: int) -> int | None:
        """How many leak-free images the method uses (``clean-data`` supervision; the row's
        ``clean_images``); None when it uses none."""
        return train_size if self.supervision == "clean-data" else None


@dataclass(frozen=True)
class Stage:
    """One part of a method's schedule: ``epochs`` of ``train_step`` after the ``begin`` hook.

    ``begin(trainer)`` runs once, right before the stage's first epoch (for 0 epochs: after the
    previous stage), and may make passes over the training set through the trainer's tools
    (``predict``, ``training_images``, ``held_out_clean``, ``reset_classifier``,
    ``set_sample_weights``). It must be repeatable from the checkpoint taken at the end of the
    previous stage: a resumed run runs it again there, and never again once its stage began.
    """

    name: str
    epochs: int
    begin: Callable[[Any], None] | None = None


# RunConfig fields that say where and how a run executes, not what it is: kept out of its
# config hash and never swept as axes.
RUN_SETTINGS = ("device", "leaderboard_dir", "data_root", "save_dir", "compile", "quiet", "deterministic")


@dataclass
class RunConfig:
    """Everything that defines a run, in pipeline order; serialised into each row."""

    method: str
    dataset: str = "digits"
    leakage: str = "binary-corner"
    masker: str | None = None
    backbone: str | None = None  # None: the dataset's default_backbone
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    leaderboard_dir: Path = Path("leaderboards")
    data_root: Path | None = None
    strength: float = 1.0
    reliability: float = 1.0
    leak_stage: str = "after"
    eval_split: str = "test"  # "tune": train without the held-out tune split, score on it (leakbench.data.splits)
    deterministic: bool = False  # deterministic algorithms, no cudnn autotuning: repeatable GPU runs, slower
    compile: bool = False
    quiet: bool = False
    save_dir: Path | None = Path("runs")  # checkpoints go to <save_dir>/<run_id>/; None: not saved

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """The inverse of ``as_dict`` (a run record's ``config.json``); keys that are not fields
        are ignored, so records may carry more."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in names}
        for key in ("leaderboard_dir", "data_root", "save_dir"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        return cls(**kwargs)


@dataclass
class RunResult:
    """What a run produced: metrics, timing, and the leaderboard row it appended."""

    metrics: dict[str, float | None]
    row: dict[str, Any]
    leaderboard_path: Path | None


@dataclass
class CellOutcome:
    """What became of one sweep cell, sent back from wherever it ran (plain data, so it pickles).

    ``status``: ``done`` (``metrics`` and ``row`` set; ``leaderboard_path`` set when the run
    appended its row itself, None when the sweep's driver still has to), ``failed`` (``error``
    is its one line), ``interrupted`` (a stop signal; ``error`` says how to go on, ``signum``
    which signal), ``running`` (another process runs this cell now) or ``skipped`` (another
    process finished it after the sweep was planned: its row is there).
    """

    status: str
    error: str = ""
    metrics: dict[str, float | None] | None = None
    row: dict[str, Any] | None = None
    leaderboard_path: Path | None = None
    signum: int = 0


@dataclass
class Executor(Plugin):
    """Base class: runs a sweep's pending cells (in this process, in workers, on a cluster).

    An executor only decides *where* cells run. What running a cell means (continue its
    unfinished run record, isolate its failure, turn a non-finite loss into a failed cell) is
    the ``task`` it is handed, one callable for every executor; it pickles, so it can be sent
    to a worker process or a Ray task as it is.
    """

    kind: ClassVar[str] = "executor"
    # True: cells run in the sweep's own process, and each run appends its own row there
    # (the sweep is then its one writer); False: rows come back in the outcomes.
    in_process: ClassVar[bool] = False

    def run(self, cells: Sequence[Cell], task: Callable[[Cell], CellOutcome],
            report: Callable[[int, CellOutcome], None], stop: StopRequest) -> None:
        """Run ``task(cell)`` once for each of ``cells`` and call ``report(index, outcome)`` in
        this process as each one finishes (any order). ``task`` never raises for a bad cell;
        it returns a ``failed`` outcome. Once ``stop`` is set (SIGTERM or SIGINT reached the
        sweep) start no further cell, let running ones stop at their next step boundary
        (their records stay resumable) and report them, then return. A cell that could not
        run at all (a worker died) is reported ``failed`` with the reason.
        """
        raise NotImplementedError
