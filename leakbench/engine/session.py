"""From a config to a ready session: ``plan_run`` resolves and checks it, ``build_session``
loads the data and builds classifier, masker and trainer on the device.

dataset -> leakage -> (augment) -> masker -> method (trainer): what ``leakbench.runs.pipeline``
trains, evaluates and records, and what ``bench`` times and ``show --run`` rebuilds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakbench.data.splits import EVAL_SPLITS
from leakbench.errors import LeakbenchError, PluginError
from leakbench.registry import PluginInfo, Registry, parse_spec
from leakbench.types import Dataset, Leakage, Masker, Method, Recipe, RunConfig

LEAK_STAGES = ("after", "before")


@dataclass
class Plan:
    """A config resolved against the registry and checked, before any data is touched."""

    config: RunConfig
    dataset: Dataset
    leakage: Leakage
    masker: Masker
    method: Method
    infos: dict[str, PluginInfo]
    recipe: Recipe
    device: Any  # torch.device
    data_root: Path
    backbone: Any  # leakbench.engine.backbone.BackboneSpec


def plan_run(config: RunConfig, registry: Registry | None = None) -> Plan:
    """Resolve plugin names and options and refuse impossible settings, all before training."""
    from leakbench.data import data_root
    from leakbench.engine.backbone import resolve_backbone
    from leakbench.engine.recipes import resolve_recipe

    registry = registry or Registry()
    dataset = registry.create("datasets", config.dataset)
    leakage = registry.create("leakages", config.leakage)
    method = registry.create("methods", config.method)
    masker = registry.create("maskers", config.masker or method.default_masker)
    infos = {kind: registry.get(f"{kind}s", obj.name)
             for kind, obj in (("dataset", dataset), ("leakage", leakage), ("masker", masker), ("method", method))}
    if method.uses_masker and masker.name == "none":
        raise LeakbenchError(f"method '{method.name}' trains against a masker; pick one with --masker (e.g. casme)")
    if not method.uses_masker and masker.name != "none":
        raise LeakbenchError(f"method '{method.name}' trains without a masker; drop --masker or use --method met")
    if method.only_maskers and masker.name not in method.only_maskers:
        raise LeakbenchError(f"method '{method.name}' is defined with masker {' or '.join(method.only_maskers)}; "
                             f"for masker '{masker.name}' use --method met --masker {masker.name}")
    for knob in ("strength", "reliability"):
        value = getattr(config, knob)
        if not 0.0 <= value <= 1.0:
            raise LeakbenchError(f"--leak-{knob} must be between 0 and 1, got {value}")
    if config.leak_stage not in LEAK_STAGES:
        raise LeakbenchError(f"--leak-stage must be one of {', '.join(LEAK_STAGES)}, got '{config.leak_stage}'")
    if config.eval_split not in EVAL_SPLITS:
        raise LeakbenchError(f"--eval-split must be one of {', '.join(EVAL_SPLITS)}, got '{config.eval_split}'")
    recipe = resolve_recipe(dataset, config.recipe, config.epochs, config.batch_size, config.lr)
    from leakbench.engine.training import resolve_stages

    resolve_stages(method, recipe.epochs)  # a schedule that cannot be split stops here, before any data
    if recipe.dataset_options:  # the scale a track recipe was sized at, where the user did not set it
        name, given = parse_spec(config.dataset)
        options = {**{k: str(v) for k, v in recipe.dataset_options.items()}, **given}
        dataset = registry.get("datasets", name).cls.from_options(options)
    backbone = resolve_backbone(config.backbone or recipe.backbone or dataset.default_backbone)
    return Plan(config, dataset, leakage, masker, method, infos, recipe, resolve_device(config.device),
                data_root(config.data_root), backbone)


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LeakbenchError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LeakbenchError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise LeakbenchError(f"device type '{device.type}' is not supported; use auto, cpu or cuda")
    return device


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Turn an unexpected exception inside a plugin into a one-line error that names it."""
    try:
        yield
    except LeakbenchError:
        raise
    except Exception as exc:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise LeakbenchError(f"out of GPU memory in {what}; lower --batch-size") from exc
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PluginError(f"{what} failed: {type(exc).__name__}: {message}") from exc


@dataclass
class Session:
    """Everything a plan needs on the device, built once: data, models, the trainer."""

    trainer: Any  # leakbench.engine.training.Trainer
    eval_set: Any  # leakbench.engine.evaluation.EvalSet on the device: the scored split, leaks written
    classifier: Any  # the uncompiled Classifier (for checkpoints and descriptions)


def build_session(plan: Plan) -> Session:
    """Load data, check the leak fits, build classifier, masker and trainer on the device."""
    import torch

    from leakbench.data.splits import split_for
    from leakbench.engine.augment import Normalizer
    from leakbench.engine.backbone import create_classifier, to_device
    from leakbench.engine.evaluation import build_eval_set
    from leakbench.engine.leak_rule import check_leakage
    from leakbench.engine.training import LeakPlan, TrainContext, Trainer, autocast_for, make_optimizer

    config, dataset, leakage, masker, recipe, device = (
        plan.config, plan.dataset, plan.leakage, plan.masker, plan.recipe, plan.device)
    torch.manual_seed(config.seed)
    set_determinism(device, config.deterministic)
    with stage(f"dataset '{dataset.name}'"):
        train_set = dataset.load("train", plan.data_root)
        test_set = dataset.load("val", plan.data_root) if config.eval_split == "test" else None
    train_set, scored = split_for(train_set, test_set, config.eval_split)
    image_size = int(train_set.images.shape[-1])
    with stage(f"leakage '{leakage.name}'"):
        try:
            leakage.prepare(train_set.num_classes, image_size)
        except ValueError as exc:
            raise LeakbenchError(f"leakage '{leakage.name}': {exc}") from None
        check_leakage(leakage, train_set.images[:16].to(device), train_set.num_classes)
        eval_set = build_eval_set(scored, leakage, config.eval_split, recipe.eval_batch_size).to(device)
    train_set = train_set.to(device)
    with stage(f"backbone '{plan.backbone.text()}'"):
        classifier = to_device(create_classifier(plan.backbone.name, train_set.num_classes, image_size,
                                                 **plan.backbone.kwargs()), device)
    with stage(f"masker '{masker.name}'"):
        masker.build(classifier, image_size, recipe, device)
    if config.compile:
        # MET's masker gradient (autograd.grad with retain_graph) and RRR's double backward run the
        # compiled classifier's backward more than once per graph, which AOTAutograd's donated buffers
        # forbid (a RuntimeError at that backward; the compiled graphs are shared between classifiers
        # of one architecture in a process, so a naive run before MET in a sweep compiles them too).
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
    model = torch.compile(classifier) if config.compile else classifier
    ctx = TrainContext(model, masker, make_optimizer(classifier.parameters(), recipe, device), recipe, device,
                       autocast_for(device))
    gen = torch.Generator(device=device).manual_seed(config.seed)
    leak_plan = None
    if plan.method.spoils_training:
        leak_plan = LeakPlan.build(leakage, train_set.labels, train_set.num_classes, config.strength,
                                   config.reliability, config.leak_stage, gen)
    def second_classifier():  # for methods that train another network of the same architecture (LfF)
        return to_device(create_classifier(plan.backbone.name, train_set.num_classes, image_size,
                                           **plan.backbone.kwargs()), device)

    with stage(f"method '{plan.method.name}'"):
        trainer = Trainer(ctx, plan.method, train_set, leak_plan, Normalizer(dataset.mean, dataset.std, device),
                          dataset.crop_padding, dataset.flip, gen, second_classifier)
    return Session(trainer, eval_set, classifier)


def set_determinism(device, deterministic: bool) -> None:
    """Fast by default (cudnn autotuning, TF32 on CUDA); ``--deterministic`` trades that for
    repeatable runs: deterministic algorithms only, no autotuning."""
    import torch

    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic  # static shapes (drop_last): autotuning pays off
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment() -> dict[str, str]:
    import subprocess

    import timm
    import torch

    import leakbench

    commit = ""
    try:
        here = Path(leakbench.__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        # results appended to the repo's own leaderboards/ are not code changes
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)leaderboards"], cwd=here, capture_output=True, text=True,
                               timeout=5).stdout.strip()
        commit += "-dirty" if commit and dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return {"torch_version": torch.__version__, "timm_version": timm.__version__,
            "leakbench_version": leakbench.__version__, "git_commit": os.environ.get("LEAKBENCH_COMMIT", commit)}

