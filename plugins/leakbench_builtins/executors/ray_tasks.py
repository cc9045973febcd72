"""Each sweep cell a Ray task: on a local Ray instance or on a cluster (``ray:address=auto``).

Ray (an optional extra, ``pip install "leakbench[ray]"``) is imported only when this executor
is chosen. A task asks for one GPU on a cluster that has GPUs, else ``num_cpus`` cores, and
runs the sweep's ``CellTask`` (resume, failure isolation, non-finite loss). A task whose worker
or node dies is retried by Ray up to ``max_retries`` times, and so is one stopped by SIGTERM
(preemption: the run checkpoints and marks itself interrupted first); a retry looks up the
cell's run record again by its config hash and continues it from its last checkpoint. That
needs ``--save-dir`` (and the data) on a filesystem every node sees, and the same leakbench
installed on every node. Rows come back to the sweep's process, which appends them: one
writer, so the leaderboard never depends on file locks working across machines.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from leakbench import hookimpl
from leakbench.errors import LeakbenchError
from leakbench.types import CellOutcome, Executor

if TYPE_CHECKING:
    from leakbench.runs.interrupts import StopRequest
    from leakbench.runs.sweep import Cell

POLL_SECONDS = 0.2
INSTALL = 'pip install "leakbench[ray]"'


class CellPreempted(Exception):
    """Raised by a task whose run stopped on SIGTERM, so Ray retries it (it resumes)."""


@dataclass
class Ray(Executor):
    """Each cell a Ray task (local Ray, or a cluster with address=auto); retried from its checkpoint."""

    name: ClassVar[str] = "ray"
    positional: ClassVar[str] = "address"
    address: str = ""  # "": join this process's Ray, else start a local one for the sweep; "auto": the cluster's
    num_cpus: int = 1  # cores per task (its torch threads) when it gets no GPU
    num_gpus: int = -1  # GPUs per task; -1: one where the cluster has GPUs, else none
    max_retries: int = 3  # retries of a task whose worker or node died, or that was preempted (SIGTERM)

    def __post_init__(self) -> None:
        _import_ray()  # absent: one line now, before anything is planned or trained
        if self.num_cpus < 1:
            raise ValueError(f"num_cpus must be 1 or more, got {self.num_cpus}")
        if self.num_gpus < -1:
            raise ValueError(f"num_gpus must be -1 (one where there are GPUs), 0 or more, got {self.num_gpus}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")

    def run(self, cells: Sequence[Cell], task: Callable[[Cell], CellOutcome],
            report: Callable[[int, CellOutcome], None], stop: StopRequest) -> None:
        """Submit every cell as a task, report each as it finishes. On a stop signal every
        unfinished task is cancelled: one not started never starts, a running one gets
        KeyboardInterrupt at its next step boundary and leaves its record resumable."""
        ray = _import_ray()
        started = self._connect(ray)
        try:
            gpus = self.num_gpus if self.num_gpus >= 0 else int(ray.cluster_resources().get("GPU", 0) > 0)
            remote = ray.remote(_ray_cell)
            env = {k: v for k, v in os.environ.items() if k.startswith("LEAKBENCH_")}
            refs: dict[Any, int] = {}
            for index, cell in enumerate(cells):
                on_gpu = gpus > 0 and cell.config.device != "cpu"
                options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": gpus if on_gpu else 0,
                                           "max_retries": self.max_retries, "retry_exceptions": [CellPreempted]}
                if env:
                    options["runtime_env"] = {"env_vars": env}
                threads = 0 if on_gpu else self.num_cpus
                refs[remote.options(**options).remote(task, _absolute(cell), threads)] = index
            waiting = list(refs)
            cancelled = False
            try:
                while waiting:
                    ready, waiting = ray.wait(waiting, num_returns=1, timeout=POLL_SECONDS)
                    for ref in ready:
                        outcome = _result(ray, ref, self.max_retries)
                        if outcome is not None:
                            report(refs[ref], outcome)
                    if stop and not cancelled:
                        for ref in waiting:
                            ray.cancel(ref)
                        cancelled = True
            finally:
                if waiting and not cancelled:  # the sweep itself failed: leave no task running for it
                    for ref in waiting:
                        ray.cancel(ref)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join Ray; True when this call started it (then the sweep shuts it down at the end)."""
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.address or None, include_dashboard=False, logging_level="warning")
        except ConnectionError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LeakbenchError(f"executor 'ray': cannot reach a Ray cluster at '{self.address}': {first}") from None
        return True


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LeakbenchError(f"executor 'ray' needs Ray, which is not installed here: {INSTALL}") from None
    return ray


def _absolute(cell: Cell) -> Cell:
    """The cell with its folders absolute: a task's working directory is the worker's, not ours."""
    config = cell.config
    folders = {key: Path(value).absolute() for key in ("leaderboard_dir", "save_dir", "data_root")
               if (value := getattr(config, key)) is not None}
    return dataclasses.replace(cell, config=dataclasses.replace(config, **folders))


def _ray_cell(task: Callable[[Cell], CellOutcome], cell: Cell, threads: int) -> CellOutcome:
    """The task body: the cell on ``threads`` cores (0: leave torch's default, on a GPU). A run
    stopped by SIGTERM raises CellPreempted so Ray retries it; the retry resumes the record."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    outcome = task(cell)
    if outcome.status == "interrupted" and outcome.signum == signal.SIGTERM:
        raise CellPreempted(outcome.error)
    return outcome


def _result(ray: Any, ref: Any, retries: int) -> CellOutcome | None:
    """A finished task's outcome; None for one cancelled before it could report (the sweep
    stopped; its record, if it started, is resumable)."""
    from ray import exceptions

    try:
        return ray.get(ref)
    except exceptions.TaskCancelledError:
        return None
    except exceptions.RayTaskError as exc:  # the task body raised after its retries (CellPreempted included)
        cause = getattr(exc, "cause", None) or exc
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return CellOutcome("failed", f"Ray task failed after {retries} retries: {text}")
    except exceptions.RayError as exc:  # its worker or node died more often than it was retried
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CellOutcome("failed", f"Ray lost the task after {retries} retries ({type(exc).__name__}: {text}); "
                                     "rerun the same sweep to resume it from its last checkpoint")


@hookimpl
def register_executors():
    return [Ray]
