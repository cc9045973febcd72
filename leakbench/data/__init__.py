"""Where datasets live on disk."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(explicit: Path | str | None = None) -> Path:
    """``--data-root``, else ``$LEAKBENCH_DATA``, else the user cache directory."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("LEAKBENCH_DATA"):
        return Path(os.environ["LEAKBENCH_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "leakbench"
