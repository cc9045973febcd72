"""User-facing errors: the CLI prints these as one line, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LeakbenchError(Exception):
    """Something the user can fix: bad name, impossible parameter, missing data."""


class PluginError(LeakbenchError):
    """A plugin raised while running; wraps the original exception for --debug."""


def closest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string, for error messages."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
