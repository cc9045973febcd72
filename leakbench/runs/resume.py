"""Continuing a run from its record: ``leakbench resume RUN_ID`` and a re-run sweep's cells.

The run is rebuilt from its ``config.json`` exactly as it started (same seed, same data, same
leak), then its checkpoint puts the trainer back at the last saved epoch boundary: weights,
optimiser and schedule state, and every random stream. From there the remaining epochs draw
the same batches and augmentations as an uninterrupted run would, so the finished row has
the same metrics (on the same device and thread count) and the same run id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leakbench.errors import LeakbenchError
from leakbench.registry import Registry
from leakbench.runs.run_record import RunRecord
from leakbench.types import RunConfig, RunResult


def resume_run(run_id: str, save_dir: Path = Path("runs"), registry: Registry | None = None, *,
               restart: bool = False, checkpoint_every: int | None = None, config: RunConfig | None = None,
               write: bool = True) -> RunResult:
    """Continue run ``run_id`` from its latest checkpoint (from epoch 0 with ``restart`` or
    when it never finished an epoch) and append its row under the same run id.

    ``config`` replaces the stored one where a sweep resumes its cell (it must plan to the
    same config hash: where the run executes may differ, what it is may not). Refused: a run
    that is done, one whose process still runs, a checkpoint that does not load or fit, and a
    config that no longer plans to the same experiment (a plugin default changed); all but
    the first two are solved by ``restart``.
    """
    from leakbench.engine.session import plan_run
    from leakbench.runs.pipeline import check_writable, config_hash, execute, record_config

    record = RunRecord.open(save_dir, run_id)
    state = record.state()
    if state.get("state") == "done":
        raise LeakbenchError(f"run {run_id} is done; its row is in {state.get('leaderboard') or 'the leaderboard'}")
    if record.alive(state):
        raise LeakbenchError(f"run {run_id} is still running (pid {state.get('pid')}); stop it first "
                             f"(kill -TERM {state.get('pid')} stops it at the next step, resumable)")
    saved = record.config()
    config = config or RunConfig.from_dict(saved)
    plan = plan_run(config, registry)
    if write:
        check_writable(config)
    every = checkpoint_every or int(saved.get("checkpoint_every", 1))
    if every < 1:
        raise LeakbenchError(f"--checkpoint-every must be at least 1, got {every}")
    now_hash = config_hash(config, plan)
    if now_hash != saved.get("config_hash") and not restart:
        raise LeakbenchError(f"run {run_id} no longer plans to the same experiment (config hash "
                             f"{saved.get('config_hash')} then, {now_hash} now: a plugin, recipe or data changed); "
                             f"`leakbench resume {run_id} --restart` starts it over with today's settings")
    if restart:
        record.discard_training_state()
        record.write_config(record_config(plan, run_id, every))
        checkpoint = None
    else:
        if write and (found := _written_row(config, plan, run_id)) is not None:
            record.update(state="done", leaderboard=str(found.leaderboard_path))  # killed after its row
            record.checkpoint_path.unlink(missing_ok=True)
            return found
        try:
            checkpoint = record.load_checkpoint(plan.device)
        except LeakbenchError as exc:
            record.update(state="failed", error=str(exc))  # `leakbench runs` shows why, and the way out
            raise
        if every != int(saved.get("checkpoint_every", 1)):
            record.write_config({**saved, "checkpoint_every": every})
    epoch = int(checkpoint["epoch"]) if checkpoint else 0
    record.start(epoch, plan.recipe.epochs)
    record.update(checkpoint_epoch=epoch)  # the file is the truth: a SIGKILL may have beaten state.json to it
    return execute(plan, run_id, record, write, every, checkpoint)


def _written_row(config: RunConfig, plan: Any, run_id: str) -> RunResult | None:
    """The row a run appended before it was killed on its way to ``done``, if any: appending
    it again would count the run twice."""
    from leakbench.engine.evaluation import METRICS
    from leakbench.results import leaderboard as lb

    path = lb.leaderboard_path(config.leaderboard_dir, plan.dataset.name)
    if not path.is_file():
        return None
    frame = lb.read([path])
    hits = frame[frame["run_id"].astype(str) == run_id] if not frame.empty else frame
    if hits.empty:
        return None
    row = hits.iloc[-1].to_dict()
    metrics = {m: None if row.get(m) is None or row.get(m) != row.get(m) else row.get(m) for m in METRICS}  # nan: none
    return RunResult(metrics, row, path)
