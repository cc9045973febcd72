"""A run's record on disk, ``<save_dir>/<run_id>/``, written from the run's first second.

A killed run used to be lost: its id and its files only appeared at the end. Now the folder
holds, while the run trains:

- ``config.json``: the run's RunConfig (``as_dict``, what ``leakbench show --run`` reads)
  plus the resolved recipe, the config hash and the checkpoint cadence, so ``leakbench
  resume`` can rebuild exactly the same run;
- ``state.json``: ``running`` | ``done`` | ``failed`` (with the error's one line) |
  ``interrupted``, the epoch reached, timestamps, and the pid and host that own it (a
  ``running`` record whose process is gone was killed);
- ``epochs.jsonl``: one JSON line per finished epoch (loss, accuracy, images/s, learning
  rates, seconds);
- ``checkpoint.pt``: the latest complete training state (``Trainer.state_dict``), loadable
  with ``torch.load(..., weights_only=True)``.

Every file is replaced atomically (temp file in the same folder, flush, fsync, rename), so
a kill at any instant leaves the previous complete version. A finished run keeps the files
``leakbench show --run`` reads (``classifier.pt``, ``masker_<name>.pt``) and drops the
training checkpoint, which only a resume needs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from leakbench.errors import LeakbenchError

STATES = ("running", "done", "failed", "interrupted")
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes; older files are then refused


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (with its type unless it is a LeakbenchError)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, LeakbenchError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temp file in its folder, flushed and fsynced, then renamed over
    it: readers and a later resume see the old file or the new one, never half of one."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        os.chmod(handle.name, 0o666 & ~_umask())  # as a plain open() would make it, not the temp file's 0600
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename survives a power cut once the folder is synced (not everywhere)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(_finite(value), indent=2, sort_keys=True) + "\n").encode()


def _finite(value: Any) -> Any:
    """JSON has no nan or inf: write them as strings ("nan"), which any reader can parse."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class RunRecord:
    """The folder of one run: its config, state, epoch log and latest checkpoint."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def run_id(self) -> str:
        return self.directory.name

    # ------------------------------------------------------------------ creating and opening

    @classmethod
    def create(cls, save_dir: Path, run_id: str, config: dict[str, Any], total_epochs: int) -> RunRecord:
        """Make the folder and write ``config.json`` and a ``running`` state at epoch 0."""
        record = cls(Path(save_dir) / run_id)
        try:
            record.directory.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise LeakbenchError(f"cannot create the run folder {record.directory}: {exc.strerror or exc}; "
                                 "choose a writable --save-dir") from None
        record.write_config(config)
        record.start(0, total_epochs, fresh=True)
        return record

    @classmethod
    def open(cls, save_dir: Path, run_id: str) -> RunRecord:
        """The record of ``run_id`` under ``save_dir``; one clear error if there is none."""
        record = cls(Path(save_dir) / run_id)
        if not (record.directory / "config.json").is_file() or not (record.directory / "state.json").is_file():
            raise LeakbenchError(f"no run record '{run_id}' in {save_dir} (no config.json and state.json there); "
                                 "`leakbench runs --save-dir DIR` lists the runs it holds")
        return record

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.directory / "config.json", lambda f: f.write(_json_bytes(config)))

    def config(self) -> dict[str, Any]:
        return self._read_json("config.json")

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return self._read_json("state.json")

    def _read_json(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.directory / name).read_text())
        except (OSError, ValueError) as exc:
            raise LeakbenchError(f"cannot read {self.directory / name}: {exc}") from None

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``state.json`` (atomically) and stamp the time."""
        path = self.directory / "state.json"
        state = self.state() if path.is_file() else {"run_id": self.run_id, "created": now()}
        state.update(fields, updated=now())
        atomic_write(path, lambda f: f.write(_json_bytes(state)))
        return state

    def start(self, epoch: int, total_epochs: int, fresh: bool = False) -> None:
        """Mark the record ``running`` by this process from ``epoch`` on."""
        previous = {"checkpoint_epoch": 0} if fresh else self.state()
        self.update(state="running", epoch=epoch, total_epochs=total_epochs, error="", signal="",
                    checkpoint_epoch=previous.get("checkpoint_epoch", 0),
                    pid=os.getpid(), host=socket.gethostname(), process_start=_process_start(os.getpid()),
                    started=now(), sessions=int(previous.get("sessions", 0)) + 1)

    def alive(self, state: dict[str, Any] | None = None) -> bool:
        """Whether the process that marked this record ``running`` still runs. A record from
        another host cannot be checked from here and counts as gone (a requeued cluster job
        resumes on another node); a recycled pid is told apart by its start time."""
        state = state if state is not None else self.state()
        if state.get("state") != "running" or state.get("host") != socket.gethostname():
            return False
        pid = int(state.get("pid") or 0)
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        started = _process_start(pid)
        if started is None:
            return True
        if started == "zombie":
            return False
        return not state.get("process_start") or started == state["process_start"]

    # ------------------------------------------------------------------ epochs

    def log_epoch(self, line: dict[str, Any]) -> None:
        """Append one epoch's line (appends of one short line do not interleave or tear)."""
        with open(self.directory / "epochs.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_finite(line), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def epochs(self) -> list[dict[str, Any]]:
        """Every readable epoch line (a line cut by a kill is skipped)."""
        path = self.directory / "epochs.jsonl"
        out = []
        if path.is_file():
            for text in path.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(text))
                except ValueError:
                    continue
        return out

    def keep_epochs(self, upto: int, history: list[dict[str, Any]]) -> None:
        """Drop epoch lines after ``upto`` (a resumed run trains those epochs again) and fill in
        any the checkpoint's ``history`` has but the log lost (a kill between the two writes)."""
        kept = {int(e.get("epoch", 0)): e for e in self.epochs() if int(e.get("epoch", 0)) <= upto}
        for line in history:
            kept.setdefault(int(line["epoch"]), line)
        text = "".join(json.dumps(_finite(kept[k]), sort_keys=True) + "\n" for k in sorted(kept))
        atomic_write(self.directory / "epochs.jsonl", lambda f: f.write(text.encode()))

    def after_epoch(self, stats: Any, total: int, every: int, state_dict: Callable[[], dict[str, Any]]) -> None:
        """After each epoch: the checkpoint (every ``every`` epochs and after the last), then its
        log line and state, so a line never claims a checkpoint that is not on disk."""
        seconds, saved = None, {}
        if stats.epoch % every == 0 or stats.epoch == total:
            start = time.perf_counter()
            self.save_checkpoint(state_dict())
            seconds, saved = round(time.perf_counter() - start, 4), {"checkpoint_epoch": stats.epoch}
        self.log_epoch({**epoch_line(stats, total), "checkpoint_seconds": seconds})
        self.update(epoch=stats.epoch, **saved)

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_path(self) -> Path:
        return self.directory / CHECKPOINT

    def save_checkpoint(self, payload: dict[str, Any]) -> None:
        """Write the training state atomically (``payload`` from ``Trainer.state_dict``)."""
        import torch

        atomic_write(self.checkpoint_path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **payload}, f))

    def load_checkpoint(self, device: Any) -> dict[str, Any] | None:
        """The latest training state, or None if the run never finished an epoch. A file that
        does not load is one clear error: silently starting over would hide lost work."""
        import torch

        path = self.checkpoint_path
        if not path.is_file():
            return None
        hint = f"`leakbench resume {self.run_id} --restart` starts the run over from epoch 0"
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # a torn, truncated, foreign or unsafe file: torch raises many kinds
            import pickle

            # the unpickler's own advice (load with weights_only=False) is wrong for a file that is not ours
            why = "not a checkpoint, or one holding more than tensors and plain values" \
                if isinstance(exc, pickle.UnpicklingError) else one_line(exc)[:160]
            raise LeakbenchError(f"the checkpoint {path} cannot be read ({why}); {hint}") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise LeakbenchError(f"the checkpoint {path} has format {found}, this leakbench reads format "
                                 f"{CHECKPOINT_FORMAT}; {hint}")
        return payload

    def write_models(self, classifier: Any, masker: Any) -> None:
        """The end-of-run weights ``leakbench show --run`` loads (state dicts only)."""
        import torch

        try:
            atomic_write(self.directory / "classifier.pt", lambda f: torch.save(classifier.state_dict(), f))
            for name, module in masker.modules().items():
                atomic_write(self.directory / f"masker_{name}.pt", lambda f, m=module: torch.save(m.state_dict(), f))
        except OSError as exc:
            raise LeakbenchError(f"cannot save checkpoints in {self.directory}: {exc.strerror or exc}; "
                                 "choose a writable --save-dir") from None

    def discard_training_state(self) -> None:
        """Forget the checkpoint and the epoch log (``--restart``)."""
        self.checkpoint_path.unlink(missing_ok=True)
        (self.directory / "epochs.jsonl").unlink(missing_ok=True)


def epoch_line(stats: Any, total: int) -> dict[str, Any]:
    """One ``epochs.jsonl`` line from a ``training.EpochStats``."""
    return {"epoch": stats.epoch, "total_epochs": total, "loss": stats.loss, "accuracy": round(stats.accuracy, 4),
            "images_per_second": round(stats.images_per_second, 1), "lr": stats.lrs,
            "seconds": round(stats.seconds, 4), **stats.extras}


def stopped_line(run_id: str, record: RunRecord | None, signum: int, epoch: int, total: int) -> str:
    """The one line a stopped run leaves: what stopped it, what is kept, how to go on."""
    import signal

    name = signal.Signals(signum).name
    if record is None:
        return f"run {run_id} stopped by {name} after epoch {epoch}/{total}; it had no --save-dir, so nothing is " \
               "kept to resume"
    kept = int(record.state().get("checkpoint_epoch", 0))
    where = "" if record.directory.parent == Path("runs") else f" --save-dir {record.directory.parent}"
    return (f"run {run_id} stopped by {name} after epoch {epoch}/{total} (checkpoint: epoch {kept}); "
            f"continue it with: leakbench resume {run_id}{where}")


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), "zombie" for a dead process
    not yet reaped, or None where /proc is not there."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return "zombie"
    return fields[19] if len(fields) > 19 else None


def records(save_dir: Path) -> list[RunRecord]:
    """Every run record under ``save_dir``, oldest first (by its config, written once at the start)."""
    root = Path(save_dir)
    if not root.is_dir():
        return []
    found = [RunRecord(p) for p in root.iterdir() if (p / "state.json").is_file() and (p / "config.json").is_file()]
    return sorted(found, key=lambda r: ((r.directory / "config.json").stat().st_mtime, r.run_id))


def by_config_hash(save_dir: Path) -> tuple[dict[str, RunRecord], set[str]]:
    """One pass over ``save_dir`` for a sweep: per config hash, the record to resume (not done,
    not running right now; of several, the one furthest along), and the hashes a live process
    is running now."""
    resume: dict[str, tuple[int, RunRecord]] = {}
    running: set[str] = set()
    for record in records(save_dir):
        try:
            config, state = record.config(), record.state()
        except LeakbenchError:
            continue
        key = str(config.get("config_hash", ""))
        if state.get("state") == "done":
            continue
        if record.alive(state):
            running.add(key)
            continue
        epoch = int(state.get("checkpoint_epoch", 0) or 0)
        if key not in resume or epoch > resume[key][0]:
            resume[key] = (epoch, record)
    return {key: record for key, (_, record) in resume.items()}, running


def shown_state(record: RunRecord, state: dict[str, Any]) -> str:
    """The state as a user should read it: a ``running`` record whose process is gone was killed."""
    value = str(state.get("state", "?"))
    return "killed" if value == "running" and not record.alive(state) else value


def summarize(record: RunRecord) -> dict[str, Any]:
    """One run as ``leakbench runs`` shows it: identity, state, progress, speed, ETA or error."""
    config, state = record.config(), record.state()
    epochs = record.epochs()
    last = epochs[-1] if epochs else {}
    shown = shown_state(record, state)
    epoch, total = int(state.get("epoch", 0)), int(state.get("total_epochs", 0))
    eta = None
    if shown == "running" and epochs:
        per_epoch = sum(float(e.get("seconds", 0.0)) for e in epochs) / len(epochs)
        eta = round(per_epoch * max(0, total - epoch), 1)
    return {"run_id": record.run_id, "experiment": config.get("experiment", ""), "seed": config.get("seed"),
            "state": shown, "epoch": epoch, "total_epochs": total, "loss": last.get("loss"),
            "accuracy": last.get("accuracy"), "images_per_second": last.get("images_per_second"),
            "eta_seconds": eta, "error": state.get("error", ""), "updated": state.get("updated", ""),
            "pid": state.get("pid"), "host": state.get("host", ""), "directory": str(record.directory)}
