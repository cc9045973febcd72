"""An outside package, pip-installed as a user would, shows up and runs with every method."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent / "outside_plugin"
TINY = ["--dataset", "digits:size=16", "--backbone", "resnet18:width=8", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(PACKAGE)], check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def leakbench(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "leakbench", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_installed_plugin_is_listed_with_its_distribution(installed):
    result = leakbench(installed, "list", "leakages")
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "red-dot" in ln)
    assert "leakbench-red-dot 0.3.0" in line and "bottom row" in line


def test_installed_plugin_runs_with_every_method(installed, tmp_path):
    for method in ("naive", "clean", "oracle", "met"):
        result = leakbench(installed, "run", "--method", method, "--leakage", "red-dot", *TINY, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "leaderboards" / "digits.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["naive", "clean", "oracle", "met"]
    assert all(r["leakage"] == "red-dot" for r in rows)
    assert "leakage=leakbench-red-dot 0.3.0" in rows[0]["providers"]
    oracle = rows[2]
    assert float(oracle["leak_coverage"]) == 1.0
    assert float(oracle["mask_size_pct"]) == pytest.approx(100 * 10 / 256, 1e-3)  # the row's first 10 pixels


def test_plugin_is_absent_when_its_distribution_is_not_allowed(installed):
    env = {**installed, "LEAKBENCH_LOAD_PLUGINS": ""}
    result = leakbench(env, "list", "leakages")
    assert result.returncode == 0 and "red-dot" not in result.stdout and "binary-corner" in result.stdout
