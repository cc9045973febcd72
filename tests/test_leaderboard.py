"""Leaderboard CSVs: fixed schema, atomic appends under a lock, aggregation over seeds."""

from __future__ import annotations

import csv
import multiprocessing as mp

import pytest

from leakbench.errors import LeakbenchError
from leakbench.results import leaderboard as lb


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


# --------------------------------------------------------------------------- one group per experiment


def _board(path, rows):
    for i, extra in enumerate(rows):
        lb.append_row(path, {**make_row(i), "seed": 0, "batch_size": 64, "lr": 0.05, **extra})


def _lines(result):
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()


def test_runs_differing_only_in_a_setting_are_separate_groups_that_show_it(tmp_path, cli_with):
    path = tmp_path / "digits.csv"
    _board(path, [{"lr": 0.05, "acc_clean": 30.0, "experiment_id": "e1"},
                  {"lr": 0.1, "acc_clean": 90.0, "experiment_id": "e2"}])
    lines = _lines(cli_with(["leaderboard", "--leaderboard-dir", str(tmp_path)]))
    header = lines[0].split()
    assert len(lines) == 3 and "lr" in header and "experiment_id" not in header
    assert [line.split()[header.index("n")] for line in lines[1:]] == ["1", "1"]  # not "n=2, 60.0 ± 42.4"
    assert lines[1].split()[header.index("lr")] == "0.1" and "90.00" in lines[1]

    # old rows without experiment_id: the identity comes from config_json (recipe fields included)
    recipe = '{{"method": "met", "recipe": {{"name": "digits", "lr": 0.05, "momentum": {}}}, "seed": 0}}'
    path.unlink()
    _board(path, [{"config_json": recipe.format(0.9)}, {"config_json": recipe.format(0.0), "acc_clean": 40.0}])
    lines = _lines(cli_with(["leaderboard", "--leaderboard-dir", str(tmp_path)]))
    assert len(lines) == 3 and "momentum" in lines[0].split()

    # tune-scored and test-scored rows are never averaged; identical-looking groups show their id
    path.unlink()
    _board(path, [{"eval_split": "tune"}, {"eval_split": "test"}, {"experiment_id": "e3"}, {"experiment_id": "e4"}])
    lines = _lines(cli_with(["leaderboard", "--leaderboard-dir", str(tmp_path)]))
    header = lines[0].split()
    assert len(lines) == 5 and {"eval_split", "experiment_id"} <= set(header)
    assert sorted(line.split()[header.index("eval_split")] for line in lines[1:]) == ["test"] * 3 + ["tune"]


def test_a_repeated_experiment_and_seed_counts_once_the_latest_kept(tmp_path, cli_with):
    path = tmp_path / "digits.csv"
    _board(path, [{"seed": 0, "acc_clean": 10.0, "timestamp": "2026-01-02T00:00:00+00:00", "experiment_id": "e"},
                  {"seed": 0, "acc_clean": 20.0, "timestamp": "2026-01-01T00:00:00+00:00", "experiment_id": "e"},
                  {"seed": 1, "acc_clean": 30.0, "timestamp": "2026-01-01T00:00:00+00:00", "experiment_id": "e"},
                  {"seed": 1, "acc_clean": 50.0, "timestamp": "2026-01-01T00:00:00+00:00", "experiment_id": "e"},
                  {"seed": 2, "acc_clean": 90.0, "experiment_id": "other"}])
    table = lb.aggregate(lb.read([path]))
    assert table.attrs["repeats_dropped"] == 2
    assert list(table["n"]) == [1, 2] and table.iloc[1]["acc_clean"] == 30.0  # seed 0: 10 (later), seed 1: 50 (tie)
    result = cli_with(["leaderboard", "--leaderboard-dir", str(tmp_path)])
    assert result.exit_code == 0 and "30.00 ± 28.28" in result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("note: 2 repeated runs (same experiment")


def test_group_by_coarsens_on_purpose_in_every_output(tmp_path, cli_with):
    path = tmp_path / "digits.csv"
    _board(path, [{"lr": 0.05, "acc_clean": 30.0, "experiment_id": "e1"},
                  {"lr": 0.1, "acc_clean": 90.0, "experiment_id": "e2"},
                  {"method": "naive", "acc_clean": 10.0, "experiment_id": "e3"}])
    base = ["leaderboard", "--leaderboard-dir", str(tmp_path), "--group-by", "method"]
    lines = _lines(cli_with(base))
    assert lines[0].split()[:2] == ["method", "n"] and "60.00 ± 42.43" in lines[1] and len(lines) == 3
    assert _lines(cli_with([*base, "--format", "csv"]))[1].startswith("met,60,")
    assert "| met | 2 | 60.00 ± 42.43 |" in cli_with([*base, "--format", "markdown"]).stdout
    pivot = _lines(cli_with([*base, "--pivot", "acc_clean", "--format", "csv"]))
    assert pivot == ["runs,met,naive", "all,60.00 ± 42.43 (2),10.00 (1)"]
    two = _lines(cli_with([*base[:-1], "method,lr", "--format", "csv"]))
    assert two[0].startswith("method,lr,acc_clean") and len(two) == 4

    bad = cli_with([*base[:-1], "method,learning_rate"])
    assert bad.exit_code != 0 and bad.output.count("\n") == 1
    assert "learning_rate" in bad.output and "leakage" in bad.output and "experiment_id" in bad.output


def test_pivot_splits_a_method_cell_by_the_setting_that_tells_experiments_apart(tmp_path, cli_with):
    path = tmp_path / "digits.csv"
    _board(path, [{"lr": 0.05, "acc_clean": 30.0, "experiment_id": "e1"},
                  {"lr": 0.1, "acc_clean": 90.0, "experiment_id": "e2"},
                  {"method": "naive", "masker": "none", "acc_clean": 10.0, "experiment_id": "e3"}])
    lines = _lines(cli_with(["leaderboard", "--leaderboard-dir", str(tmp_path), "--pivot", "acc_clean",
                             "--format", "csv"]))
    assert lines[0] == "lr,met,naive"
    assert set(lines[1:]) == {"0.05,30.00 (1),10.00 (1)", "0.1,90.00 (1),"}


OLD_COLUMNS = tuple(c for c in lb.COLUMNS
                    if c not in ("eval_split", "acc_spoiled_masked", "deterministic", "experiment_id"))


def test_an_older_layout_is_read_and_upgraded_in_place(tmp_path, cli_with):
    path = tmp_path / "digits.csv"
    lb.append_row(path, make_row(0, acc=70.0), columns=OLD_COLUMNS)
    lb.append_row(path, make_row(1, acc=80.0), columns=OLD_COLUMNS)
    before = list(csv.DictReader(path.open()))
    assert lb.result_files(tmp_path) == [path]
    frame = lb.read([path])
    assert tuple(frame.columns) == lb.COLUMNS and frame["experiment_id"].isna().all()
    assert "75.00 ± 7.07" in _lines(cli_with(["leaderboard", "--leaderboard-dir", str(tmp_path)]))[1]

    lb.append_row(path, {**make_row(2, acc=90.0), "eval_split": "test", "experiment_id": "e"})
    with path.open(newline="") as handle:
        header = next(csv.reader(handle))
        rows = list(csv.DictReader(path.open()))
    assert tuple(header) == lb.COLUMNS and len(rows) == 3
    for old, new in zip(before, rows, strict=False):
        assert {c: new[c] for c in OLD_COLUMNS} == old and new["experiment_id"] == new["eval_split"] == ""
    assert rows[2]["experiment_id"] == "e" and rows[2]["acc_clean"] == "90"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_header_with_unknown_columns_is_refused_in_one_line(tmp_path):
    path = tmp_path / "digits.csv"
    content = ",".join((*OLD_COLUMNS, "surprise")) + "\n" + ",".join(["x"] * (len(OLD_COLUMNS) + 1)) + "\n"
    path.write_text(content)
    with pytest.raises(LeakbenchError) as error:
        lb.append_row(path, make_row(0))
    message = str(error.value)
    assert "surprise" in message and "\n" not in message and "run_id" not in message
    assert path.read_text() == content
    assert lb.result_files(tmp_path) == []
