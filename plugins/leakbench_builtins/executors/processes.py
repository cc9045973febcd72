"""N worker processes on this machine: one per GPU, or the CPU cores split between them.

Why ``concurrent.futures.ProcessPoolExecutor`` with the spawn context rather than a
``python -m leakbench run`` subprocess per cell: a worker is started once and runs many
cells (torch, timm and the plugins are imported once per worker, not once per cell), each
outcome comes back as a Python object (metrics, the row, the one-line error) instead of
text to parse, and the pool is the standard library's. Spawn, not fork: a forked child of a
process that has touched torch's thread pools or CUDA is not safe to use.

Each cell runs through the sweep's ``CellTask`` (resume, failure isolation, non-finite loss),
sends its row back, and the sweep's process appends it: one writer, so rows land once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from leakbench import hookimpl
from leakbench.types import CellOutcome, Executor

if TYPE_CHECKING:
    from leakbench.runs.interrupts import StopRequest
    from leakbench.runs.sweep import Cell

POLL_SECONDS = 0.2  # how often the sweep looks for finished cells and a worker for the sweep's stop

# per worker process, set by _start_worker
_stop_value: Any = None


@dataclass
class Processes(Executor):
    """N worker processes here: one per GPU (CUDA_VISIBLE_DEVICES), or the CPU cores split."""

    name: ClassVar[str] = "processes"
    positional: ClassVar[str] = "workers"
    workers: int = 0  # 0: one per visible GPU, or 2 on a machine without one

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be 1 or more (0: one per GPU, else 2), got {self.workers}")

    def plan(self, cells: Sequence[Cell]) -> tuple[int, list[str | None], int]:
        """(workers, the GPU each worker sees or None, torch threads per worker) for ``cells``.

        With GPUs (and cells not pinned to the CPU) worker i sees GPU i mod the count, so the
        default of one worker per GPU gives each its own; on CPU each worker gets
        ``cores // workers`` intra-op threads, so N workers never oversubscribe the cores."""
        gpus = _visible_gpus() if any(c.config.device != "cpu" for c in cells) else []
        workers = max(1, min(self.workers or len(gpus) or 2, len(cells)))
        slots: list[str | None] = [gpus[i % len(gpus)] for i in range(workers)] if gpus else [None] * workers
        return workers, slots, max(1, _cores() // workers)

    def run(self, cells: Sequence[Cell], task: Callable[[Cell], CellOutcome],
            report: Callable[[int, CellOutcome], None], stop: StopRequest) -> None:
        """Submit every cell, report each as it finishes. On a stop signal no queued cell starts
        (workers see the shared stop value before they begin one) and running cells stop at
        their next step: a worker turns the value into its own stop request, no signal needed."""
        import concurrent.futures as cf
        import multiprocessing

        workers, slots, threads = self.plan(cells)
        context = multiprocessing.get_context("spawn")
        stop_value = context.Value("i", 0)
        gpu_slots = context.Queue()
        for slot in slots:
            gpu_slots.put(slot)
        pool = cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                      initargs=(gpu_slots, stop_value, threads))
        try:
            futures = {pool.submit(_work, task, cell): index for index, cell in enumerate(cells)}
            waiting = set(futures)
            while waiting:
                done, waiting = cf.wait(waiting, timeout=POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    outcome = _result(future)
                    if outcome is not None:  # None: it never started, the sweep stopped first
                        report(futures[future], outcome)
                if stop and not stop_value.value:
                    stop_value.value = int(stop.signum or 2)
                    for future in waiting:
                        future.cancel()
                    waiting = {f for f in waiting if not f.cancelled()}
        finally:
            if not stop_value.value and any(not f.done() for f in futures):  # an error here: stop the workers too
                stop_value.value = int(stop.signum or 2)
            pool.shutdown(wait=True, cancel_futures=True)


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (ids or UUIDs)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _start_worker(gpu_slots: Any, stop_value: Any, threads: int) -> None:
    """In each new worker: its GPU (before anything initialises CUDA), its share of the cores,
    and signals ignored while idle (a Ctrl-C in the terminal reaches the whole process group;
    an idle worker must not die of it, a running cell catches it in ``_work``)."""
    import signal

    global _stop_value
    _stop_value = stop_value
    slot = gpu_slots.get()
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)


def _work(task: Callable[[Cell], CellOutcome], cell: Cell) -> CellOutcome | None:
    """One cell in a worker, under a stop request that both a signal to this process and the
    sweep's stop value set (a watcher thread copies the value into it: the trainer reads it
    between steps). None when the sweep stopped before this cell began."""
    import threading

    from leakbench.runs.interrupts import graceful_stop

    with graceful_stop() as request:  # installed before the check below: no stop slips between them
        if _stop_value is not None and _stop_value.value:
            return None
        finished = threading.Event()

        def watch() -> None:
            while not finished.wait(POLL_SECONDS):
                if _stop_value is not None and _stop_value.value and not request:
                    request.signum = int(_stop_value.value)
                    return

        watcher = threading.Thread(target=watch, name="leakbench-stop-watch", daemon=True)
        watcher.start()
        try:
            return task(cell)
        finally:
            finished.set()
            watcher.join()


def _result(future: Any) -> CellOutcome | None:
    """A finished future's outcome; a worker that died (killed, out of memory) fails its cell."""
    import concurrent.futures as cf
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except cf.CancelledError:
        return None
    except KeyboardInterrupt:  # a bare interrupt inside the worker, sent back: the cell stopped, not the sweep
        return CellOutcome("interrupted", "stopped in its worker process; rerun the same sweep to resume it", signum=2)
    except BrokenProcessPool:
        return CellOutcome("failed", "its worker process died (killed or out of memory); rerun the same sweep to "
                                     "resume it from its last checkpoint")
    except Exception as exc:  # the cell could not be sent or its outcome not received
        return CellOutcome("failed", f"worker error: {type(exc).__name__}: {exc}".splitlines()[0])


@hookimpl
def register_executors():
    return [Processes]
