"""The default executor: the cells one after another in the sweep's own process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from leakbench import hookimpl
from leakbench.types import CellOutcome, Executor

if TYPE_CHECKING:
    from leakbench.runs.interrupts import StopRequest
    from leakbench.runs.sweep import Cell


@dataclass
class Local(Executor):
    """One cell after another in this process (the default; uses every core for each run)."""

    name: ClassVar[str] = "local"
    in_process: ClassVar[bool] = True

    def run(self, cells: Sequence[Cell], task: Callable[[Cell], CellOutcome],
            report: Callable[[int, CellOutcome], None], stop: StopRequest) -> None:
        """A run shares the sweep's stop request (``graceful_stop`` nests), so a signal stops
        the running cell at its next step, and no cell starts after it."""
        for index, cell in enumerate(cells):
            if stop:
                return
            outcome = task(cell)
            report(index, outcome)
            if outcome.status == "interrupted":
                return


@hookimpl
def register_executors():
    return [Local]
