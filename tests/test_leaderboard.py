"""Leaderboard CSVs: fixed schema, atomic appends under a lock, aggregation over seeds."""

from __future__ import annotations

import csv
import multiprocessing as mp

import pytest

from leakbench import leaderboard as lb
from leakbench.errors import LeakbenchError


def make_row(i: int, method: str = "met", acc: float = 50.0) -> dict:
    return {"run_id": f"r{i}", "dataset": "digits", "leakage": "binary-corner", "strength": 1.0,
            "reliability": 1.0, "leak_stage": "after", "masker": "casme", "method": method, "supervision": "none",
            "backbone": "resnet18", "recipe": "digits", "epochs": 15, "seed": i, "acc_clean": acc,
            "acc_spoiled": 99.0, "leak_following": 0.1, "acc_clean_masked": None, "config_json": '{"a": "x,y"}'}


def _append_many(args):
    path, worker = args
    for i in range(15):
        lb.append_row(path, make_row(worker * 100 + i))


def test_concurrent_appends_never_lose_or_tear_rows(tmp_path):
    path = tmp_path / "digits.csv"
    with mp.get_context("spawn").Pool(6) as pool:
        pool.map(_append_many, [(path, w) for w in range(6)])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 90 and len({r["run_id"] for r in rows}) == 90
    assert all(len(r) == len(lb.COLUMNS) and r["config_json"] == '{"a": "x,y"}' for r in rows)
    assert not list(tmp_path.glob("*.tmp"))


def test_schema_is_fixed_and_empty_means_not_applicable(tmp_path):
    path = tmp_path / "digits.csv"
    lb.append_row(path, make_row(0))
    header, row = list(csv.reader(path.open()))
    assert tuple(header) == lb.COLUMNS
    assert row[lb.COLUMNS.index("acc_clean_masked")] == ""
    with pytest.raises(ValueError, match="outside the schema"):
        lb.append_row(path, {**make_row(1), "surprise": 1})


def test_foreign_csv_is_not_overwritten(tmp_path):
    path = tmp_path / "digits.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(LeakbenchError, match="different column layout"):
        lb.append_row(path, make_row(0))
    assert path.read_text() == "a,b\n1,2\n"


def test_aggregate_means_stds_and_ranks_by_clean_accuracy(tmp_path):
    path = tmp_path / "digits.csv"
    for i, acc in enumerate((60.0, 70.0)):
        lb.append_row(path, make_row(i, "met", acc))
    lb.append_row(path, make_row(5, "naive", 10.0))
    (tmp_path / "throughput.csv").write_text("device,images_per_second\nx,1\n")
    files = lb.result_files(tmp_path)
    assert files == [path]
    table = lb.aggregate(lb.read(files))
    assert list(table["method"]) == ["met", "naive"]
    met = table.iloc[0]
    assert met["acc_clean"] == 65.0 and met["n"] == 2 and met["acc_clean_std"] == pytest.approx(7.0711, 1e-3)
    assert "65.00 ± 7.07" in lb.render(table)
    assert lb.aggregate(lb.read(files), leakage="patch").empty


def test_pivot_puts_methods_side_by_side_per_setting(tmp_path, cli_with):
    path = tmp_path / "digits.csv"
    for seed, acc in enumerate((80.0, 90.0)):
        lb.append_row(path, {**make_row(seed, "met", acc), "leakage": "patch"})
        lb.append_row(path, {**make_row(10 + seed, "naive", 10.0 + seed), "masker": "none", "leakage": "patch"})
    lb.append_row(path, {**make_row(20, "met", 70.0), "masker": "random"})  # a non-default masker: own column
    lb.append_row(path, {**make_row(30, "clean", 99.0), "masker": "none", "leak_stage": ""})  # no stage: same row

    result = cli_with(["leaderboard", "--leaderboard-dir", str(tmp_path), "--pivot", "acc_clean",
                       "--format", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[2] == "| leakage | clean | met | met + random | naive |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[4:]}
    assert set(rows) == {"binary-corner", "patch"}
    assert "85.00 ± 7.07 (2)" in rows["patch"] and "10.50 ± 0.71 (2)" in rows["patch"]
    assert "99.00 (1)" in rows["binary-corner"] and "70.00 (1)" in rows["binary-corner"]

    bad = cli_with(["leaderboard", "--leaderboard-dir", str(tmp_path), "--pivot", "accuracy"])
    assert bad.exit_code != 0 and bad.output.count("\n") == 1 and "acc_clean" in bad.output
