"""Stopping a run cleanly on SIGTERM or SIGINT, at a training step boundary.

A cluster sends SIGTERM (and a user Ctrl-C, SIGINT) some seconds before it kills a job. The
handler here only records the signal; the trainer looks at the flag between steps (a Python
attribute read, no device synchronisation) and stops there, so no checkpoint is ever cut in
half and the run record can be marked ``interrupted`` with its last complete checkpoint. A
second signal stops at once (for a run that no longer reaches a step boundary).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """Raised at a step boundary after a stop signal; a KeyboardInterrupt so that code which
    keeps going past ordinary errors (a plugin wrapper, a sweep) does not swallow it."""


class RunInterrupted(KeyboardInterrupt):
    """A run (or sweep) stopped by a signal, with the one line that tells the user how to go on."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.message, self.signum = message, int(signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it (130, 143)."""
        return 128 + self.signum


@dataclass
class StopRequest:
    """What the signal handler saw: the first signal's number, or None while none came."""

    signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise StopRequested if a signal came (the trainer calls this between steps)."""
        if self.signum is not None:
            raise StopRequested(signal.Signals(self.signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "SIGINT"


_active: StopRequest | None = None


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Catch SIGTERM and SIGINT for the duration; nested uses share the outermost request (a
    sweep around its runs), and the previous handlers come back afterwards. Outside the main
    thread signals cannot be caught: the request then simply never fires."""
    global _active
    if _active is not None:
        yield _active
        return
    request = StopRequest()

    def handler(signum: int, frame: object) -> None:
        if request.signum is not None:  # the second signal: stop now
            raise RunInterrupted(f"stopped at once by a second {signal.Signals(signum).name}", signum)
        request.signum = signum

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            previous[signum] = signal.signal(signum, handler)
    _active = request
    try:
        yield request
    finally:
        _active = None
        for signum, old in previous.items():
            signal.signal(signum, old)
