"""Sweep executors side by side, Ray's overhead, and what a checkpoint costs per epoch.

One session (``python -m pytest benchmarks/bench_executors.py --benchmark-only -s``) times the
same sweep of CELLS tiny runs through ``local``, ``processes:2`` and ``ray`` (once starting its
own local Ray instance, as ``--executor ray`` does, and once joining a running one), each in
fresh folders, one round each: a sweep is seconds long and a second round would only find
its rows. Printed at the end: wall seconds, speed-up over local, and per-cell overhead.
Ray's fixed cost is also timed directly: ``ray.init`` and a no-op task's round trip.

The checkpoint benchmark runs the default digits MET configuration for EPOCHS epochs with a
run record (checkpoint every epoch) and reads each epoch's checkpoint seconds against its
training seconds from ``epochs.jsonl``; a second run without a save dir gives the wall-clock
difference.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

CELLS = 6
TINY = ["--dataset", "digits:size=8", "--backbone", "resnet18:width=8", "--epochs", "1"]
EPOCHS = 2
RESULTS: dict[str, float] = {}  # executor -> sweep wall seconds, for the summary


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("LEAKBENCH_OFFLINE", "1")


def _sweep(executor: str, folder: Path) -> float:
    from leakbench.cli import cli

    args = ["sweep", "--executor", executor, "--method", "naive", "--seeds", ",".join(map(str, range(CELLS))),
            *TINY, "--leaderboard-dir", str(folder / "lb"), "--save-dir", str(folder / "runs")]
    start = time.perf_counter()
    result = CliRunner().invoke(cli, args)
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert f"{CELLS} ran" in result.output, result.output
    return seconds


def _timed(benchmark, executor: str, key: str, tmp_path: Path) -> None:
    runs = iter(range(100))

    def once() -> None:
        RESULTS[key] = _sweep(executor, tmp_path / f"round{next(runs)}")

    benchmark.group = f"sweep of {CELLS} tiny runs"
    benchmark.pedantic(once, rounds=1, iterations=1)
    benchmark.extra_info.update(executor=executor, cells=CELLS, seconds_per_cell=RESULTS[key] / CELLS)


@pytest.mark.parametrize("executor", ["local", "processes:2", "ray"])
def test_sweep(benchmark, tmp_path, executor):
    """``ray`` here starts (and stops) its own local Ray instance, as a user's first sweep does."""
    import ray

    assert not ray.is_initialized()
    _timed(benchmark, executor, executor, tmp_path)


@pytest.fixture(scope="module")
def ray_running():
    import ray

    start = time.perf_counter()
    ray.init(include_dashboard=False, logging_level="warning")
    RESULTS["ray.init"] = time.perf_counter() - start
    yield ray
    ray.shutdown()


def test_sweep_ray_joined(benchmark, tmp_path, ray_running):
    """The same sweep on an already running Ray (a cluster, or a second sweep): no start cost."""
    _timed(benchmark, "ray", "ray (joined)", tmp_path)


def test_ray_noop_task_round_trip(benchmark, ray_running):
    ray = ray_running

    @ray.remote(num_cpus=1)
    def noop() -> int:
        return 0

    ray.get(noop.remote())  # a worker is up
    benchmark.group = "ray"
    benchmark(lambda: ray.get(noop.remote()))
    RESULTS["noop task"] = benchmark.stats.stats.median


def test_checkpoint_cost_per_epoch(benchmark, tmp_path):
    """Default dataset and backbone (digits, resnet18:width=16), MET, a checkpoint every epoch."""
    from leakbench.runs.pipeline import run_one
    from leakbench.types import RunConfig

    def run(save_dir: Path | None) -> tuple[float, Path | None]:
        config = RunConfig(method="met", epochs=EPOCHS, quiet=True, leaderboard_dir=tmp_path / "lb",
                           save_dir=save_dir)
        result = run_one(config, checkpoint_every=1)
        return float(result.row["train_seconds"]), None if save_dir is None else save_dir / result.row["run_id"]

    def both() -> None:
        with_ckpt, record = run(tmp_path / "runs")
        without, _ = run(None)
        lines = [json.loads(line) for line in (record / "epochs.jsonl").read_text().splitlines()]
        shares = [line["checkpoint_seconds"] / line["seconds"] for line in lines]
        RESULTS.update({"checkpoint s/epoch": sum(x["checkpoint_seconds"] for x in lines) / len(lines),
                        "epoch s": sum(x["seconds"] for x in lines) / len(lines),
                        "checkpoint share": sum(shares) / len(shares), "train s with checkpoints": with_ckpt,
                        "train s without": without})

    benchmark.group = "checkpoint"
    benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in RESULTS.items() if "checkpoint" in k or "train" in k})


def test_zz_summary():
    """Print the figures side by side (runs last: file order)."""
    local = RESULTS.get("local")
    print(f"\nmachine: {os.cpu_count()} CPUs; sweep of {CELLS} tiny runs (digits:size=8, resnet18:width=8, 1 epoch)")
    for key in ("local", "processes:2", "ray", "ray (joined)"):
        if key in RESULTS and local:
            seconds = RESULTS[key]
            print(f"  {key:<14} {seconds:7.1f} s  {seconds / CELLS:5.2f} s/cell  speed-up over local "
                  f"{local / seconds:4.2f}x")
    if "ray" in RESULTS and "processes:2" in RESULTS:
        print(f"  ray over processes:2, per cell: {(RESULTS['ray'] - RESULTS['processes:2']) / CELLS:+.2f} s "
              f"(own instance), {(RESULTS.get('ray (joined)', 0) - RESULTS['processes:2']) / CELLS:+.2f} s (joined)")
    for key in ("ray.init", "noop task"):
        if key in RESULTS:
            print(f"  {key}: {RESULTS[key] * (1000 if key == 'noop task' else 1):.2f} "
                  f"{'ms' if key == 'noop task' else 's'}")
    if "checkpoint share" in RESULTS:
        print(f"checkpoint (digits MET, default backbone, {EPOCHS} epochs): "
              f"{RESULTS['checkpoint s/epoch'] * 1000:.0f} ms per epoch of {RESULTS['epoch s']:.2f} s "
              f"= {RESULTS['checkpoint share'] * 100:.2f}%; train seconds with checkpoints "
              f"{RESULTS['train s with checkpoints']:.2f}, without {RESULTS['train s without']:.2f}")
