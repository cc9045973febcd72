"""``run_one(config)``: the one place where the stages meet, in pipeline order.

dataset -> leakage -> (augment) -> masker -> method (trainer) -> evaluation -> leaderboard

Everything that can be known before data is touched is checked in ``plan_run`` (names,
options, settings, writable output folders); ``build_session`` then checks what needs the
data (the leak fits the images, the leakage keeps the leak-mask rule) before training. Both
live in ``leakbench.engine.session``; this module trains, evaluates and records the run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import signal
from pathlib import Path
from typing import Any

from leakbench.engine.session import Plan, Session, build_session, device_name, environment, plan_run, stage
from leakbench.errors import LeakbenchError
from leakbench.registry import Registry
from leakbench.results.leaderboard import append_row, leaderboard_path
from leakbench.runs.run_record import RunRecord, epoch_line, new_run_id, one_line, stopped_line
from leakbench.types import RUN_SETTINGS, Masker, Method, RunConfig, RunResult


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
    from leakbench.engine.evaluation import evaluate
    from leakbench.engine.training import NonFiniteLoss
    from leakbench.runs.interrupts import RunInterrupted, graceful_stop

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
    from leakbench.engine.backbone import describe
    from leakbench.engine.training import describe_stages

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
