"""Sweep executors: ``local``, ``processes:N`` and a real local Ray instance run the same cells,
rows land exactly once, a failing cell stays alone, and bad choices are one line."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from leakbench.errors import LeakbenchError
from leakbench.registry import Registry
from leakbench.results.leaderboard import COLUMNS, append_row
from leakbench.runs import sweep as sw

TINY = ["--dataset", "digits:size=8", "--backbone", "resnet18:width=8", "--epochs", "1"]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _sweep(tmp_path: Path, executor: str, seeds: str = "0,1,2,3") -> list[str]:
    return ["sweep", "--executor", executor, "--method", "naive", "--seeds", seeds, *TINY,
            "--leaderboard-dir", str(tmp_path / "lb"), "--save-dir", str(tmp_path / "runs")]


def _records(save_dir: Path) -> list[Path]:
    """The run folders (the sweep's cell claims live beside them, in .claims)."""
    return sorted(p for p in save_dir.iterdir() if not p.name.startswith("."))


def _running_past_first_checkpoint(save: Path) -> tuple[str, dict] | None:
    """(run id, state) of a record in ``save`` that is running and has checkpointed, if any."""
    for state_file in save.glob("*/state.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):  # being rewritten right now
            continue
        if state.get("state") == "running" and int(state.get("checkpoint_epoch") or 0) >= 1:
            return state_file.parent.name, state
    return None


def _exactly_once(rows: list[dict[str, str]], seeds: list[str]) -> None:
    assert sorted(r["seed"] for r in rows) == sorted(seeds)
    assert len({r["run_id"] for r in rows}) == len(rows) == len(seeds)


# --------------------------------------------------------------------------- choosing an executor

def test_executors_register_through_entry_points_and_take_a_bare_worker_count(registry):
    executors = registry.all("executors")
    assert {"local", "processes", "ray"} <= set(executors)
    assert executors["processes"].provider == "leakbench"
    assert registry.create("executors", "processes:2").workers == 2
    assert registry.create("executors", "processes:workers=3").workers == 3
    assert registry.create("executors", "ray:auto,num_cpus=2").address == "auto"
    with pytest.raises(LeakbenchError, match="executor 'processes' option 'workers' expects int, got 'x'"):
        registry.create("executors", "processes:x")
    with pytest.raises(LeakbenchError, match="workers must be 1 or more"):
        registry.create("executors", "processes:-1")


def test_list_shows_executors(cli_with):
    result = cli_with(["list", "executors"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ("local", "processes", "ray"))


def test_unknown_executor_is_one_line_with_a_suggestion_before_anything_runs(cli_with, tmp_path):
    result = cli_with(_sweep(tmp_path, "proceses:2"))
    assert result.exit_code != 0
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert "unknown executor 'proceses'" in result.output and "did you mean 'processes'" in result.output
    assert not (tmp_path / "lb").exists() and not (tmp_path / "runs").exists()


def test_ray_absent_is_one_line_naming_the_extra(cli_with, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = cli_with(_sweep(tmp_path, "ray"))
    assert result.exit_code != 0
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert 'pip install "leakbench[ray]"' in result.output
    assert not (tmp_path / "lb").exists() and not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- rows land exactly once

def _append_at_once(path: str, index: int, barrier) -> None:
    row = {c: "" for c in COLUMNS} | {"run_id": f"writer{index:02d}", "dataset": "digits", "method": "naive",
                                      "seed": index, "acc_clean": 50.0 + index,
                                      "config_json": json.dumps({"note": f'quote " and, comma {index}'})}
    barrier.wait()  # all eight append at the same moment
    append_row(Path(path), row)


def test_eight_processes_appending_at_once_write_eight_intact_rows(tmp_path):
    path = tmp_path / "digits.csv"
    for i in range(2):
        append_row(path, {"run_id": f"before{i}", "dataset": "digits", "method": "met", "seed": i,
                          "acc_clean": 10.0 * i, "config_json": '{"a": "x,y"}'})
    before = path.read_bytes()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    workers = [context.Process(target=_append_at_once, args=(str(path), i, barrier)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * 8
    after = path.read_bytes()
    assert after.startswith(before)  # rows present before are byte-identical, nothing else changed
    rows = _rows(path)
    assert [r["run_id"] for r in rows[:2]] == ["before0", "before1"]
    added = sorted(rows[2:], key=lambda r: r["run_id"])
    assert [r["run_id"] for r in added] == [f"writer{i:02d}" for i in range(8)]
    for i, row in enumerate(added):
        assert row["seed"] == str(i) and float(row["acc_clean"]) == 50.0 + i
        assert json.loads(row["config_json"]) == {"note": f'quote " and, comma {i}'}
    assert after.count(b"\n") == 1 + 2 + 8 and not list(tmp_path.glob(".digits.csv.*"))  # no temp file left


# --------------------------------------------------------------------------- processes

def test_processes_run_a_sweep_and_each_row_lands_once(cli_with, tmp_path):
    first = cli_with(_sweep(tmp_path, "processes:2"))
    assert first.exit_code == 0, first.output
    assert "4 ran" in first.output and "0 failed" in first.output
    assert sum(line.startswith("[") for line in first.output.splitlines()) == 4  # one line per cell
    rows = _rows(tmp_path / "lb" / "digits.csv")
    _exactly_once(rows, ["0", "1", "2", "3"])
    states = [json.loads((p / "state.json").read_text()) for p in _records(tmp_path / "runs")]
    assert len(states) == 4 and {s["state"] for s in states} == {"done"}
    assert len({s["pid"] for s in states}) == 2  # two worker processes, neither of them this one
    assert os.getpid() not in {s["pid"] for s in states}
    again = cli_with(_sweep(tmp_path, "processes:2"))
    assert again.exit_code == 0 and "0 ran, 4 already in the leaderboard" in again.output, again.output
    assert len(_rows(tmp_path / "lb" / "digits.csv")) == 4


def test_sigterm_to_a_processes_sweep_stops_its_workers_resumably_and_a_rerun_finishes(tmp_path):
    """A real SIGTERM to the sweep's process (as a scheduler sends it) while two workers train:
    the sweep exits 143, the running cells stop at a step boundary as ``interrupted`` records
    without rows, and the same sweep rerun continues them: every row once, every epoch once."""
    import subprocess

    save = tmp_path / "runs"
    command = [sys.executable, "-m", "leakbench", "sweep", "--executor", "processes:2", "--method", "naive",
               "--seeds", "0,1", "--dataset", "digits", "--backbone", "resnet18:width=8", "--epochs", "6",
               "--leaderboard-dir", str(tmp_path / "lb"), "--save-dir", str(save)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sweep.poll() is None:
        if _running_past_first_checkpoint(save):
            sweep.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    output = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 143, output
    assert "sweep stopped by SIGTERM" in output and "rerun the same sweep" in output
    stopped = {p.name: json.loads((p / "state.json").read_text()) for p in _records(save)}
    assert stopped and all(s["state"] in ("interrupted", "done") for s in stopped.values()), stopped
    interrupted = [run for run, s in stopped.items() if s["state"] == "interrupted"]
    assert interrupted, stopped  # at least the cell past its first checkpoint stopped mid-run
    landed = {r["run_id"] for r in _rows(tmp_path / "lb" / "digits.csv")}
    assert not landed & set(interrupted)  # a stopped run has no row

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = _rows(tmp_path / "lb" / "digits.csv")
    _exactly_once(rows, ["0", "1"])
    assert set(interrupted) <= {r["run_id"] for r in rows}  # continued, not started over
    for run in interrupted:
        epochs = [json.loads(line)["epoch"] for line in (save / run / "epochs.jsonl").open()]
        assert epochs == [1, 2, 3, 4, 5, 6]


def test_a_cell_failing_in_a_worker_leaves_the_others_running(cli_with, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('method = "naive"\nseed = [0, 1]\nlr = [0.05, 1e30]\ndataset = "digits:size=8"\n'
                    'backbone = "resnet18:width=8"\nepochs = 1\n')
    result = cli_with(["sweep", "--config", str(grid), "--executor", "processes:2", "--leaderboard-dir",
                       str(tmp_path / "lb"), "--save-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert "2 ran" in result.output and "2 failed" in result.output
    assert result.output.count("FAILED") == 2 and "the training loss is nan" in result.output
    assert "2 sweep cell(s) failed" in result.output
    rows = _rows(tmp_path / "lb" / "digits.csv")
    assert sorted((r["seed"], float(r["lr"])) for r in rows) == [("0", 0.05), ("1", 0.05)]
    failed = [json.loads((p / "state.json").read_text()) for p in _records(tmp_path / "runs")]
    assert sorted(s["state"] for s in failed) == ["done", "done", "failed", "failed"]


# --------------------------------------------------------------------------- the one per-cell task

def _planned_cell(tmp_path: Path, registry: Registry, seed: int = 5) -> sw.Cell:
    from leakbench.types import RunConfig

    board, save = tmp_path / "lb", tmp_path / "runs"
    config = RunConfig(method="naive", dataset="digits:size=8", backbone="resnet18:width=8", epochs=1, seed=seed,
                       quiet=True, leaderboard_dir=board, save_dir=save)
    (cell,) = sw.plan_cells([sw.Cell(config, f"naive seed {seed}")], registry, board)
    assert cell.status == "pending" and not cell.resume
    return cell


def test_a_task_looks_again_and_continues_the_record_left_since_planning(tmp_path):
    """What a retried Ray task relies on, and a long local sweep too: the cell's record, found
    again by its config hash when the cell starts, not when the sweep was planned."""
    from leakbench.engine.session import plan_run
    from leakbench.runs.pipeline import record_config
    from leakbench.runs.run_record import RunRecord

    registry = Registry()
    cell = _planned_cell(tmp_path, registry)  # planned before the record below existed
    live = RunRecord.create(tmp_path / "runs", "live00000001",
                            record_config(plan_run(cell.config, registry), "live00000001", 1), 1)
    running = sw.CellTask(write=False, registry=registry)(cell)
    assert (running.status, running.error) == ("running", "another process is running this cell now")
    live.update(pid=_a_finished_pid())  # its process is gone (killed with its Ray worker)
    outcome = sw.CellTask(write=False, registry=registry)(cell)
    assert outcome.status == "done", outcome.error
    assert outcome.row["run_id"] == "live00000001" and outcome.leaderboard_path is None
    assert not (tmp_path / "lb").exists()  # write=False: the row came back to the sweep, nothing was appended here


def test_a_task_skips_a_cell_whose_row_landed_after_planning_and_one_claimed_elsewhere(tmp_path):
    from filelock import FileLock

    registry = Registry()
    cell = _planned_cell(tmp_path, registry)
    claim = FileLock(str(tmp_path / "runs" / ".claims" / f"{cell.config_hash}.lock"))
    (tmp_path / "runs" / ".claims").mkdir(parents=True)
    with claim:  # another process is on this cell
        held = sw.CellTask(registry=registry)(cell)
    assert (held.status, held.error) == ("running", "another process is running this cell now")
    assert not (tmp_path / "lb").exists()
    first = sw.CellTask(registry=registry)(cell)  # the claim is free again: it runs and writes its row
    assert first.status == "done" and len(_rows(tmp_path / "lb" / "digits.csv")) == 1
    again = sw.CellTask(registry=registry)(cell)  # planned before that row landed
    assert (again.status, again.error) == ("skipped", "another process finished this cell after the sweep was planned")
    assert len(_rows(tmp_path / "lb" / "digits.csv")) == 1


def test_two_sweeps_over_one_grid_share_the_cells_instead_of_running_them_twice(tmp_path):
    """Two terminals (or machines on one save dir) start the same sweep at once: every cell
    runs once, each row lands once, and neither sweep fails."""
    import subprocess

    command = [sys.executable, "-m", "leakbench", *_sweep(tmp_path, "local", "0,1,2,3,4,5")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweeps = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
              for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], outputs
    _exactly_once(_rows(tmp_path / "lb" / "digits.csv"), ["0", "1", "2", "3", "4", "5"])
    trained = sum(o.count("acc_clean") for o in outputs)
    assert trained == 6, outputs  # each cell trained by one of the two
    assert len(_records(tmp_path / "runs")) == 6


def _a_finished_pid() -> int:
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --------------------------------------------------------------------------- a real local Ray instance

@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


def test_ray_runs_a_sweep_and_a_rerun_trains_nothing(cli_with, tmp_path, ray_local):
    first = cli_with(_sweep(tmp_path, "ray"))
    assert first.exit_code == 0, first.output
    assert "4 ran" in first.output and "0 failed" in first.output
    _exactly_once(_rows(tmp_path / "lb" / "digits.csv"), ["0", "1", "2", "3"])
    again = cli_with(_sweep(tmp_path, "ray"))
    assert again.exit_code == 0, again.output
    assert "0 ran, 4 already in the leaderboard" in again.output
    assert not any(line.startswith("[") for line in again.output.splitlines())  # nothing trained
    assert len(_rows(tmp_path / "lb" / "digits.csv")) == 4
    assert len(_records(tmp_path / "runs")) == 4


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_ray_task_whose_worker_is_killed_is_retried_and_resumes(cli_with, tmp_path, ray_local, signum):
    """SIGKILL the Ray worker after the run's first checkpoint (a dead node), or SIGTERM it (a
    preemption: the run checkpoints and stops): Ray retries the task, the retry finds the run
    record by config hash and continues it; one row, under the first attempt's run id."""
    import threading

    save = tmp_path / "runs"
    args = ["sweep", "--executor", "ray:max_retries=2", "--method", "naive", "--seeds", "0", "--epochs", "4",
            "--leaderboard-dir", str(tmp_path / "lb"), "--save-dir", str(save)]
    killed: dict[str, object] = {}

    def kill_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            found = _running_past_first_checkpoint(save)
            if found:
                run_id, state = found
                os.kill(int(state["pid"]), signum)
                killed.update(run_id=run_id, epoch=state["checkpoint_epoch"])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result = cli_with(args)
    killer.join(5)
    assert killed, f"the run finished before its worker could be killed: {result.output}"
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "lb" / "digits.csv")
    assert [r["run_id"] for r in rows] == [killed["run_id"]]  # the same run, continued, once
    assert [p.name for p in _records(save)] == [killed["run_id"]]
    epochs = [json.loads(line)["epoch"] for line in (save / str(killed["run_id"]) / "epochs.jsonl").open()]
    assert epochs == [1, 2, 3, 4]
