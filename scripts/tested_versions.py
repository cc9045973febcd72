"""Print the resolved versions of the packages leakbench depends on, beside a tested set.

Usage: ``python scripts/tested_versions.py constraints/torch-2.14.txt``. CI runs it after
installing, so its log says what it tested; a difference from the recorded set is shown,
not fatal (a registry may publish a newer release), and tells us to refresh the file.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

SHOWN = ("torch", "torchvision", "timm", "numpy", "pandas", "pluggy", "scikit-learn", "matplotlib", "pytest")


def recorded(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def main() -> int:
    pins = recorded(Path(sys.argv[1])) if len(sys.argv) > 1 else {}
    print(f"tested environment: Python {platform.python_version()} on {platform.machine()}")
    differ = []
    for name in SHOWN:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        note = ""
        if name in pins and pins[name] != version:
            note = f"   (recorded: {pins[name]})"
            differ.append(name)
        print(f"  {name:<14} {version}{note}")
    if differ:
        print(f"resolved versions differ from {sys.argv[1]} for {', '.join(differ)}: rerun the suite and refresh it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
