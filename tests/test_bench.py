"""`leakbench bench` and recipe presets: the speed tooling works on any device, CPU included."""

from __future__ import annotations

import csv

from click.testing import CliRunner
from conftest import TINY

from leakbench.cli import cli
from leakbench.results.bench import THROUGHPUT_COLUMNS
from leakbench.results.leaderboard import result_files


def test_bench_measures_naive_and_met_and_appends_throughput_rows(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--dataset", "digits:size=8", "--backbone", "resnet18:width=8",
                                      "--steps", "2", "--warmup", "1", "--batch-size", "32",
                                      "--leaderboard-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "x naive per image" in result.output
    with open(tmp_path / "throughput.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["naive", "met"]
    assert tuple(rows[0]) == THROUGHPUT_COLUMNS
    assert all(float(r["train_images_per_second"]) > 0 and r["batch_size"] == "32" for r in rows)
    assert rows[0]["precision"] == "fp32" and rows[0]["compile"] == "False"
    assert all(r["seed"] == "0" and r["git_commit"] is not None and r["device"] for r in rows)
    assert result_files(tmp_path) == []  # the throughput file is not mistaken for a results leaderboard


def test_recipe_presets_go_into_the_row(tmp_path):
    for recipe in ("fast", "paper"):
        result = CliRunner().invoke(cli, ["run", "--method", "naive", *TINY, "--recipe", recipe,
                                          "--batch-size", "64", "--leaderboard-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
    with open(tmp_path / "digits.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["recipe"], r["epochs"], r["batch_size"]) for r in rows] == [("fast", "1", "64"), ("paper", "1", "64")]
    assert '"nesterov": true' in rows[0]["config_json"] and '"schedule": "step"' in rows[1]["config_json"]
