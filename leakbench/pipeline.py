"""``run_one(config)``: the one place where the stages meet, in pipeline order.

dataset -> leakage -> (augment) -> masker -> method (trainer) -> evaluation -> leaderboard

Everything that can be known before data is touched is checked in ``plan_run`` (names,
options, settings, writable output folders); ``build_session`` then checks what needs the
data (the leak fits the images, the leakage keeps the leak-mask rule) before training.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakbench.errors import LeakbenchError, PluginError
from leakbench.leaderboard import append_row, leaderboard_path
from leakbench.registry import PluginInfo, Registry, parse_spec
from leakbench.run_record import RunRecord, epoch_line, new_run_id, one_line, stopped_line
from leakbench.splits import EVAL_SPLITS
from leakbench.types import RUN_SETTINGS, Dataset, Leakage, Masker, Method, Recipe, RunConfig, RunResult

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
    backbone: Any  # leakbench.backbone.BackboneSpec


def plan_run(config: RunConfig, registry: Registry | None = None) -> Plan:
    """Resolve plugin names and options and refuse impossible settings, all before training."""
    from leakbench.backbone import resolve_backbone
    from leakbench.data import data_root
    from leakbench.recipes import resolve_recipe

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
    from leakbench.training import resolve_stages

    resolve_stages(method, recipe.epochs)  # a schedule that cannot be split stops here, before any data
    if recipe.dataset_options:  # the scale a track recipe was sized at, where the user did not set it
        name, given = parse_spec(config.dataset)
        options = {**{k: str(v) for k, v in recipe.dataset_options.items()}, **given}
        dataset = registry.get("datasets", name).cls.from_options(options)
    backbone = resolve_backbone(config.backbone or recipe.backbone or dataset.default_backbone)
    return Plan(config, dataset, leakage, masker, method, infos, recipe, resolve_device(config.device),
                data_root(config.data_root), backbone)


def check_writable(config: RunConfig) -> None:
    """Refuse an unwritable --leaderboard-dir or --save-dir before any data is loaded: finding
    out after hours of training loses the run."""
    import tempfile

    for folder, flag in ((config.leaderboard_dir, "--leaderboard-dir"), (config.save_dir, "--save-dir")):
        if folder is None:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise LeakbenchError(f"cannot write in {folder}: {exc.strerror or exc}; choose a writable {flag}") \
                from None


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

    trainer: Any  # leakbench.training.Trainer
    eval_set: Any  # leakbench.evaluation.EvalSet on the device: the scored split, leaks written
    classifier: Any  # the uncompiled Classifier (for checkpoints and descriptions)


def build_session(plan: Plan) -> Session:
    """Load data, check the leak fits, build classifier, masker and trainer on the device."""
    import torch

    from leakbench.augment import Normalizer
    from leakbench.backbone import create_classifier, to_device
    from leakbench.evaluation import build_eval_set
    from leakbench.leak_rule import check_leakage
    from leakbench.splits import split_for
    from leakbench.training import LeakPlan, TrainContext, Trainer, autocast_for, make_optimizer

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


def run_one(config: RunConfig, registry: Registry | None = None, write: bool = True, *,
            checkpoint_every: int = 1) -> RunResult:
    """Train and evaluate one configuration and append its leaderboard row.

    With a ``save_dir`` the run owns ``<save_dir>/<run_id>/`` from its first second (config,
    state, epoch log, a checkpoint every ``checkpoint_every`` epochs and after the last), so a
    killed or interrupted run can be continued by ``resume_run`` with the same result.
    """
    if checkpoint_every < 1:
        raise LeakbenchError(f"--checkpoint-every must be at least 1, got {checkpoint_every}")
    plan = plan_run(config, registry)
    if write:
        check_writable(config)
    run_id, record = new_run_id(), None
    if config.save_dir is not None:
        record = RunRecord.create(Path(config.save_dir), run_id, record_config(plan, run_id, checkpoint_every),
                                  plan.recipe.epochs)
    return execute(plan, run_id, record, write, checkpoint_every)


def record_config(plan: Plan, run_id: str, checkpoint_every: int) -> dict[str, Any]:
    """``config.json`` of a run record: the RunConfig as given (what ``show --run`` and a
    resume rebuild it from) plus what it resolved to and how often it checkpoints."""
    config = plan.config
    masker = "" if plan.masker.name == "none" else f" ({plan.masker.spec()})"
    return {**config.as_dict(), "run_id": run_id, "resolved_recipe": dict(plan.recipe.__dict__),
            "backbone_resolved": plan.backbone.text(), "config_hash": config_hash(config, plan),
            "experiment_id": experiment_id(config, plan), "checkpoint_every": checkpoint_every,
            "experiment": f"{plan.dataset.spec()} / {plan.leakage.spec()} / {plan.method.spec()}{masker}"}


def execute(plan: Plan, run_id: str, record: RunRecord | None, write: bool, checkpoint_every: int,
            resume: dict[str, Any] | None = None) -> RunResult:
    """Build, train (from ``resume``'s epoch if given), evaluate, append the row; keep the run
    record's state true at every exit: ``done``, ``failed`` with its one line, or
    ``interrupted`` after SIGTERM/SIGINT (stopped at a step boundary, latest checkpoint whole)."""
    from leakbench.evaluation import evaluate
    from leakbench.interrupts import RunInterrupted, graceful_stop
    from leakbench.training import NonFiniteLoss

    config, masker, method = plan.config, plan.masker, plan.method
    trainer = None
    with graceful_stop() as stop:
        try:
            session = build_session(plan)
            trainer = session.trainer
            if resume is not None:
                try:
                    trainer.load_state_dict(resume)
                except LeakbenchError as exc:
                    raise LeakbenchError(f"run {run_id}: {exc}; `leakbench resume {run_id} --restart` starts it "
                                         "over from epoch 0") from None
            if record is not None:
                record.keep_epochs(trainer.epoch, [epoch_line(h, plan.recipe.epochs) for h in trainer.history])
            on_epoch = None if record is None else \
                lambda stats: record.after_epoch(stats, plan.recipe.epochs, checkpoint_every, trainer.state_dict)
            with stage(f"method '{method.name}'"):
                history = trainer.fit(progress=not config.quiet, on_epoch=on_epoch, stop=stop.check)
            stop.check()
            with stage("evaluation"):
                metrics = evaluate(trainer.ctx.classifier, masker, session.eval_set, trainer.normalize,
                                   plan.recipe.eval_batch_size, trainer.ctx.autocast)
            row = build_row(plan, session, run_id, metrics, history)
            if record is not None:  # the weights `leakbench show --run` reads, before the row points at them
                record.write_models(session.classifier, masker)
            path = None
            if write:
                path = leaderboard_path(config.leaderboard_dir, plan.dataset.name)
                append_row(path, row)
        except KeyboardInterrupt as exc:  # a stop signal at a step boundary, a second signal, or Ctrl-C unhandled
            epoch = trainer.epoch if trainer is not None else 0
            signum = stop.signum or getattr(exc, "signum", None) or signal.SIGINT
            if record is not None:
                record.update(state="interrupted", signal=signal.Signals(signum).name)
            raise RunInterrupted(stopped_line(run_id, record, signum, epoch, plan.recipe.epochs), signum) from None
        except NonFiniteLoss as exc:
            if record is not None:
                record.log_epoch(epoch_line(exc.stats, plan.recipe.epochs))
                record.update(state="failed", error=f"run {run_id}: {exc}")
            raise LeakbenchError(f"run {run_id}: {exc}") from None
        except BaseException as exc:
            if record is not None:
                record.update(state="failed", error=one_line(exc))
            raise
    if record is not None:
        record.update(state="done", epoch=trainer.epoch, leaderboard=str(path) if path else "")
        record.checkpoint_path.unlink(missing_ok=True)  # only a resume needs it; the weights stay
    return RunResult(metrics, row, path)


def build_row(plan: Plan, session: Session, run_id: str, metrics: dict[str, Any], history: list[Any]) -> dict[str, Any]:
    """The leaderboard row. Training time is the sum of the epochs' own times, so a resumed run
    reports what its epochs cost, not the hours it lay stopped (checkpoint writes excluded)."""
    from leakbench.backbone import describe
    from leakbench.training import describe_stages

    config, dataset, leakage, masker, method, recipe = (
        plan.config, plan.dataset, plan.leakage, plan.masker, plan.method, plan.recipe)
    images_seen = sum(h.images for h in history)
    train_seconds = sum(h.seconds for h in history)
    return {
        "run_id": run_id,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset.spec(), "leakage": leakage.spec(), "strength": config.strength,
        "reliability": config.reliability, "leak_stage": config.leak_stage if method.spoils_training else "",
        "masker": masker.spec(), "method": method.spec(), "supervision": _supervision(method, masker),
        "clean_images": method.clean_images(len(session.trainer.data)),
        "backbone": plan.backbone.text(), "recipe": recipe.name, "epochs": recipe.epochs,
        "stages": describe_stages(session.trainer.stages),
        "batch_size": recipe.batch_size, "lr": recipe.lr, "seed": config.seed, "eval_split": config.eval_split,
        **metrics,
        "train_seconds": round(train_seconds, 2), "images_per_second": round(images_seen / train_seconds, 1),
        "device": device_name(plan.device), "precision": "bf16-autocast" if plan.device.type == "cuda" else "fp32",
        "deterministic": config.deterministic, "backbone_config": describe(session.classifier),
        "dataset_notes": dataset.describe(), **environment(),
        "providers": ";".join(f"{k}={i.provider} {i.version}".strip() for k, i in plan.infos.items()),
        "experiment_id": experiment_id(config, plan), "config_hash": config_hash(config, plan),
        "config_json": json.dumps({**config.as_dict(), "recipe": recipe.__dict__}, sort_keys=True),
    }


def _supervision(method: Method, masker: Masker) -> str:
    levels = {method.supervision, masker.supervision} - {"none"}
    return "+".join(sorted(levels)) or "none"


def identity(config: RunConfig, plan: Plan) -> dict[str, Any]:
    """What makes an experiment, from resolved values: a flag equal to the recipe's default
    is the same experiment as no flag; every plugin option counts, default or not (a default
    changed later must not merge old and new rows); the data's own identity counts (which
    folder, which source checksum). Not where or how verbosely it ran."""
    keep = {k: v for k, v in config.as_dict().items()
            if k not in RUN_SETTINGS and k not in ("recipe", "epochs", "batch_size", "lr")}
    for kind, plugin in (("dataset", plan.dataset), ("leakage", plan.leakage), ("masker", plan.masker),
                         ("method", plan.method)):
        keep[kind] = {"name": plugin.name, **{k: _plain(v) for k, v in plugin.params().items()}}
    keep["data"] = plan.dataset.identity(plan.data_root)
    keep["backbone"] = plan.backbone.identity()
    keep["recipe"] = plan.recipe.identity()
    return keep


def experiment_id(config: RunConfig, plan: Plan) -> str:
    """The experiment without its seed: rows that share it are seeds of one experiment."""
    keep = identity(config, plan)
    keep.pop("seed")
    return _digest(keep)


def config_hash(config: RunConfig, plan: Plan) -> str:
    """One run of an experiment (its identity and seed), for skipping reruns."""
    return _digest(identity(config, plan))


def _digest(value: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


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
