"""``leakbench bench``: training and evaluation throughput of the real hot path, per device."""

from __future__ import annotations

import datetime as dt
import time
from itertools import chain, repeat
from pathlib import Path
from typing import Any

from leakbench.engine.session import build_session, device_name, environment, plan_run, stage
from leakbench.registry import Registry
from leakbench.results.leaderboard import append_row
from leakbench.types import RunConfig

THROUGHPUT_COLUMNS = (
    "timestamp", "device", "precision", "method", "masker", "dataset", "backbone", "backbone_config", "image_size",
    "batch_size", "compile", "channels_last", "seed", "warmup_steps", "steps", "train_images_per_second",
    "train_step_ms", "eval_images_per_second", "torch_version", "timm_version", "leakbench_version", "git_commit",
)


def measure(config: RunConfig, steps: int = 50, warmup: int = 10, registry: Registry | None = None) -> dict[str, Any]:
    """Images/s of ``steps`` training steps (after ``warmup``) and of evaluation forwards."""
    import torch

    from leakbench.engine.backbone import describe

    plan = plan_run(config, registry)
    session = build_session(plan)
    trainer, device = session.trainer, plan.device
    batches = chain.from_iterable(trainer.batches() for _ in repeat(None))  # endless reshuffled epochs

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    trainer.train_mode()
    with stage(f"method '{plan.method.name}'"):  # a plugin's failure is one line here too, as in a run
        for _ in range(warmup):
            trainer.step(next(batches))
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step(next(batches))
        sync()
    train_seconds = time.perf_counter() - start

    model, val = trainer.ctx.classifier, session.eval_set
    model.eval()
    eval_batch = min(plan.recipe.eval_batch_size, len(val))
    x = trainer.normalize(val.images[:eval_batch])
    with torch.no_grad(), trainer.ctx.autocast():
        for _ in range(3):
            model(x)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
    eval_seconds = time.perf_counter() - start
    env = environment()
    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
        "method": plan.method.spec(), "masker": plan.masker.spec(), "dataset": plan.dataset.spec(),
        "backbone": plan.backbone.text(), "backbone_config": describe(session.classifier),
        "image_size": int(val.images.shape[-1]), "batch_size": trainer.batch_size, "compile": config.compile,
        "channels_last": device.type == "cuda", "seed": config.seed, "warmup_steps": warmup, "steps": steps,
        "train_images_per_second": round(steps * trainer.batch_size / train_seconds, 1),
        "train_step_ms": round(1000 * train_seconds / steps, 3),
        "eval_images_per_second": round(steps * eval_batch / eval_seconds, 1),
        **{k: env[k] for k in ("torch_version", "timm_version", "leakbench_version", "git_commit")},
    }


def record(row: dict[str, Any], leaderboard_dir: Path) -> Path:
    path = Path(leaderboard_dir) / "throughput.csv"
    append_row(path, row, THROUGHPUT_COLUMNS)
    return path
