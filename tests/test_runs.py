"""Runs that survive: run records, resume after SIGKILL or SIGTERM, signals, non-finite losses, ``runs``.

The kill tests use real ``python -m leakbench`` processes (one intra-op thread each, so the
resumed run's numbers can be compared bit for bit with an uninterrupted run's); the others
stay in process and stop a run by having a test method send SIGTERM to its own process.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from leakbench_builtins.methods.naive import Naive

from leakbench import hookimpl
from leakbench.engine.evaluation import METRICS
from leakbench.runs.run_record import RunRecord

TINY_RUN = ["--dataset", "digits:size=8", "--backbone", "resnet18:width=8", "--quiet"]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _state(save_dir: Path, run_id: str) -> dict:
    return json.loads((save_dir / run_id / "state.json").read_text())


# --------------------------------------------------------------------------- real processes

def _leakbench(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LEAKBENCH_OFFLINE": "1"}
    env.pop("LEAKBENCH_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "leakbench", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _first_checkpoint(save_dir: Path, process: subprocess.Popen, timeout: float = 600) -> str:
    """The run id once its first checkpoint is on disk (the run is then in epoch 2 or later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(save_dir.glob("*/checkpoint.pt"))
        if found:
            return found[0].parent.name
        if process.poll() is not None:
            pytest.fail(f"the run ended before its first checkpoint: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("no checkpoint appeared")


@pytest.mark.parametrize(("how", "method"), [
    (signal.SIGKILL, ["--method", "met"]),  # casme: Adam and two schedules to restore
    (signal.SIGTERM, ["--method", "met", "--masker", "random"]),  # the random masker's own generator too
], ids=["sigkill-met-casme", "sigterm-met-random"])
def test_a_killed_or_stopped_run_resumes_to_the_uninterrupted_result(tmp_path, how, method):
    args = ["run", *method, *TINY_RUN, "--epochs", "3", "--checkpoint-every", "1"]
    reference = _leakbench([*args, "--leaderboard-dir", "ref-lb", "--save-dir", "ref-runs"], tmp_path)
    victim = _leakbench([*args, "--leaderboard-dir", "lb", "--save-dir", "runs"], tmp_path)
    run_id = _first_checkpoint(tmp_path / "runs", victim)
    victim.send_signal(how)
    code, _, err = _finish(victim)
    state = _state(tmp_path / "runs", run_id)
    assert not _rows(tmp_path / "lb" / "digits.csv"), "a stopped run must not write a row"
    saved = torch.load(tmp_path / "runs" / run_id / "checkpoint.pt", weights_only=True)
    assert 1 <= saved["epoch"] < 3  # (a SIGKILL may land before state.json catches up with the file)
    if how == signal.SIGTERM:
        assert code == 143, err
        assert state["state"] == "interrupted" and state["signal"] == "SIGTERM"
        assert state["checkpoint_epoch"] == saved["epoch"]
        assert err.strip().splitlines()[-1].endswith(f"continue it with: leakbench resume {run_id}"), err
    else:
        assert code == -signal.SIGKILL and state["state"] == "running"  # its process is gone: `runs` says killed
    assert _finish(reference)[0] == 0

    code, out, err = _finish(_leakbench(["resume", run_id], tmp_path))
    assert f"row {run_id} appended" in out
    assert code == 0, err
    (resumed,) = _rows(tmp_path / "lb" / "digits.csv")
    (uninterrupted,) = _rows(tmp_path / "ref-lb" / "digits.csv")
    assert resumed["run_id"] == run_id
    assert {m: resumed[m] for m in METRICS} == {m: uninterrupted[m] for m in METRICS}
    assert resumed["config_hash"] == uninterrupted["config_hash"]
    epochs = [json.loads(line) for line in (tmp_path / "runs" / run_id / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]  # epochs after the checkpoint were trained again, logged once
    final = _state(tmp_path / "runs", run_id)
    assert final["state"] == "done" and final["sessions"] == 2
    assert not (tmp_path / "runs" / run_id / "checkpoint.pt").exists()  # only a resume needs it
    assert (tmp_path / "runs" / run_id / "classifier.pt").is_file()  # what `leakbench show --run` reads


# --------------------------------------------------------------------------- in process

@dataclass
class SignalsOnce(Naive):
    """Naive that sends its own process SIGTERM once, in its 30th step (epoch 2), as a cluster would."""

    name: ClassVar[str] = "signals-once"
    sent: ClassVar[int] = 0
    steps: int = field(default=0, init=False)  # not an option: kept out of the method's spec

    def train_step(self, ctx, x, y, leak_mask):
        self.steps += 1
        if self.steps == 30 and type(self).sent == 0:
            type(self).sent += 1
            os.kill(os.getpid(), signal.SIGTERM)
        return super().train_step(ctx, x, y, leak_mask)


@dataclass
class NanLoss(Naive):
    """Naive whose reported loss is nan (a diverged run)."""

    name: ClassVar[str] = "nan-loss"

    def train_step(self, ctx, x, y, leak_mask):
        stats = super().train_step(ctx, x, y, leak_mask)
        return {**stats, "loss": stats["loss"] * float("nan")}


class _Methods:
    @hookimpl
    def register_methods(self):
        return [SignalsOnce, NanLoss]


METHODS = _Methods()


@pytest.fixture(autouse=True)
def _fresh_signal():
    SignalsOnce.sent = 0
    yield


def _interrupted(cli_with, tmp_path) -> str:
    result = cli_with(["run", "--method", "signals-once", *TINY_RUN, "--epochs", "3", "--leaderboard-dir",
                       str(tmp_path / "lb"), "--save-dir", str(tmp_path / "runs")], METHODS)
    assert result.exit_code == 143, result.output
    (run_id,) = [p.name for p in (tmp_path / "runs").iterdir()]
    assert f"leakbench resume {run_id} --save-dir {tmp_path / 'runs'}" in result.output
    assert _state(tmp_path / "runs", run_id)["state"] == "interrupted"
    return run_id


def test_a_corrupt_or_foreign_checkpoint_is_one_error_line_and_restart_recovers(cli_with, tmp_path):
    run_id = _interrupted(cli_with, tmp_path)
    checkpoint = tmp_path / "runs" / run_id / "checkpoint.pt"
    good = checkpoint.read_bytes()
    resume = ["resume", run_id, "--save-dir", str(tmp_path / "runs")]

    checkpoint.write_bytes(good[: len(good) // 2])  # cut short
    cut = cli_with(resume, METHODS)
    assert cut.exit_code == 1 and cut.output.startswith("Error: the checkpoint "), cut.output
    assert cut.output.count("\n") == 1 and f"leakbench resume {run_id} --restart" in cut.output

    state = torch.load(io_bytes(good), weights_only=True)
    state["classifier"]["fc.weight"] = torch.zeros(3, 3)  # a checkpoint of some other model
    torch.save(state, checkpoint)
    foreign = cli_with(resume, METHODS)
    assert foreign.exit_code == 1 and "does not fit this run" in foreign.output, foreign.output
    assert foreign.output.count("\n") == 1 and "--restart" in foreign.output
    assert not _rows(tmp_path / "lb" / "digits.csv")  # neither attempt wrote a row or started over silently
    assert _state(tmp_path / "runs", run_id)["state"] == "failed"

    restarted = cli_with([*resume, "--restart"], METHODS)
    assert restarted.exit_code == 0, restarted.output
    (row,) = _rows(tmp_path / "lb" / "digits.csv")
    assert row["run_id"] == run_id and _state(tmp_path / "runs", run_id)["state"] == "done"
    again = cli_with(resume, METHODS)
    assert again.exit_code == 1 and "is done" in again.output


def io_bytes(data: bytes):
    import io

    return io.BytesIO(data)


def test_a_rerun_sweep_resumes_its_stopped_cell_and_a_nan_cell_fails_alone(cli_with, tmp_path):
    args = ["sweep", "--method", "nan-loss", "--method", "signals-once", "--method", "naive", "--seeds", "0",
            *TINY_RUN[:-1], "--epochs", "3", "--leaderboard-dir", str(tmp_path / "lb"),
            "--save-dir", str(tmp_path / "runs")]
    first = cli_with(args, METHODS)
    assert first.exit_code == 143, first.output  # stopped in its second cell; the first cell's failure is kept
    assert "FAILED" in first.output and "epoch 1/3 of method 'nan-loss': the training loss is nan" in first.output
    assert "rerun the same sweep" in first.output
    records = {json.loads((p / "config.json").read_text())["method"]: p.name for p in (tmp_path / "runs").iterdir()
               if not p.name.startswith(".")}
    assert set(records) == {"nan-loss", "signals-once"}
    nan_state = _state(tmp_path / "runs", records["nan-loss"])
    assert nan_state["state"] == "failed" and "epoch 1/3 of method 'nan-loss'" in nan_state["error"]

    second = cli_with(args, METHODS)
    assert second.exit_code == 1, second.output  # the nan cell fails again, and only it
    assert f"resumes run {records['signals-once']} from epoch 1" in second.output
    assert "2 ran" in second.output and "1 failed" in second.output
    assert "failed: nan-loss" in second.output and "the training loss is nan" in second.output
    rows = _rows(tmp_path / "lb" / "digits.csv")
    assert sorted(r["method"] for r in rows) == ["naive", "signals-once"]
    assert next(r for r in rows if r["method"] == "signals-once")["run_id"] == records["signals-once"]


def test_runs_lists_every_state(cli_with, tmp_path):
    save = tmp_path / "runs"
    stopped = _interrupted(cli_with, tmp_path)
    failed = cli_with(["run", "--method", "nan-loss", *TINY_RUN, "--epochs", "1", "--leaderboard-dir",
                       str(tmp_path / "lb"), "--save-dir", str(save)], METHODS)
    assert failed.exit_code == 1 and failed.output.count("\n") == 1, failed.output
    assert "epoch 1/1 of method 'nan-loss': the training loss is nan" in failed.output
    done = cli_with(["run", "--method", "naive", *TINY_RUN, "--epochs", "1", "--leaderboard-dir",
                     str(tmp_path / "lb"), "--save-dir", str(save)], METHODS)
    assert done.exit_code == 0, done.output
    config = json.loads((save / stopped / "config.json").read_text())
    running = RunRecord.create(save, "live0000run1", config, 3)  # this test's own process holds it
    running.log_epoch({"epoch": 1, "loss": 1.5, "accuracy": 40.0, "images_per_second": 100.0, "seconds": 10.0})
    running.update(epoch=1)
    killed = RunRecord.create(save, "dead0000run1", config, 3)
    killed.update(pid=_a_finished_pid())

    listed = cli_with(["runs", "--save-dir", str(save), "--json"])
    assert listed.exit_code == 0, listed.output
    by_state = {r["state"]: r for r in json.loads(listed.output)}
    assert set(by_state) == {"interrupted", "failed", "done", "running", "killed"}
    assert by_state["interrupted"]["run_id"] == stopped and by_state["interrupted"]["epoch"] == 1
    assert "the training loss is nan" in by_state["failed"]["error"]
    assert by_state["running"]["eta_seconds"] == pytest.approx(20.0)
    assert by_state["killed"]["run_id"] == "dead0000run1"
    assert by_state["done"]["epoch"] == by_state["done"]["total_epochs"] == 1
    table = cli_with(["runs", "--save-dir", str(save)])
    assert table.exit_code == 0 and len(table.output.strip().splitlines()) == 5
    assert "ETA 0m20s" in table.output and "digits:size=8 / binary-corner / naive" in table.output


def _a_finished_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_running_run_is_not_resumed_twice(cli_with, tmp_path):
    save = tmp_path / "runs"
    config = {"method": "naive", "dataset": "digits:size=8", "config_hash": "x"}
    RunRecord.create(save, "live0000run2", config, 3)
    result = cli_with(["resume", "live0000run2", "--save-dir", str(save)])
    assert result.exit_code == 1 and "is still running" in result.output and result.output.count("\n") == 1
