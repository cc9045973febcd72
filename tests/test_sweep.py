"""``leakbench sweep``: grids expand as asked, finished cells are skipped, failures do not stop it."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakbench.errors import LeakbenchError
from leakbench.registry import Registry
from leakbench.results.leaderboard import read, result_files
from leakbench.runs import sweep as sw

TINY = ["--dataset", "digits:size=8", "--backbone", "resnet18:width=8", "--epochs", "1"]



def _rows(directory):
    return read(result_files(directory))


def test_lambda_r_reaches_met_default_masker_and_skips_methods_without_it():
    grid = sw.Grid(axes={"method": ["naive", "met", "oracle"], "seed": [0, 1]}, options={"lambda_r": [1, 10, 100]})
    cells = sw.expand(grid, Registry())
    specs = {(c.config.method, c.config.masker, c.config.seed) for c in cells}
    assert ("met", "casme:lambda_r=1", 0) in specs and ("met", "casme:lambda_r=100", 1) in specs
    assert ("naive", None, 0) in specs and ("oracle", None, 1) in specs  # no lambda_r there: left alone
    planned = sw.plan_cells(cells, Registry(), leaderboard_dir=Path("/nonexistent"))
    statuses = [c.status for c in planned]
    # naive and oracle are the same run for every lambda_r value: each is planned once per seed
    assert statuses.count("pending") == len(cells) == 2 * 3 + 2 + 2 and statuses.count("duplicate") == 0


def test_masker_axis_applies_only_where_a_masker_can_be_chosen():
    grid = sw.Grid(axes={"method": ["met", "naive", "saliency-met"], "masker": ["random", "casme"]})
    cells = sw.plan_cells(sw.expand(grid, Registry()), Registry(), Path("/nonexistent"))
    pending = {(c.config.method, c.config.masker) for c in cells if c.status == "pending"}
    assert pending == {("met", "random"), ("met", "casme"), ("naive", None), ("saliency-met", None)}


def test_toml_file_lists_are_axes_scalars_are_fixed(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('methods = ["naive", "met"]\nseed = [0, 1, 2]\nreliability = [1.0, 0.9, 0.7, 0.5]\n'
                    'epochs = 5\ndevice = "cpu"\nleaderboard_dir = "lb"\n[options]\nlambda_r = [1, 10, 100]\n')
    grid = sw.load_toml(path)
    assert grid.axes == {"method": ["naive", "met"], "seed": [0, 1, 2], "reliability": [1.0, 0.9, 0.7, 0.5],
                         "epochs": [5]}
    assert grid.options == {"lambda_r": [1, 10, 100]}
    assert grid.settings["device"] == "cpu" and str(grid.settings["leaderboard_dir"]) == "lb"
    cells = sw.expand(grid, Registry())
    # met x 3 seeds x 4 reliabilities x 3 lambda_r; naive has no lambda_r, so once per seed and reliability
    assert len(cells) == 3 * 4 * (3 + 1) and all(c.config.epochs == 5 for c in cells)
    bad = tmp_path / "bad.toml"
    bad.write_text("methodz = ['met']\n")
    with pytest.raises(LeakbenchError, match="unknown key 'methodz'"):
        sw.load_toml(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("method = [\n")
    with pytest.raises(LeakbenchError, match="not valid TOML"):
        sw.load_toml(broken)



@pytest.mark.parametrize(("line", "message"), [
    ('seed = ["x"]', "seed expects int, got 'x'"),
    ("seed = 1.5", "seed expects int, got '1.5'"),
    ('device = ["cpu", "cuda"]', "'device' is a fixed setting and takes one value"),
    ("sweep = 5", "must be a table"),
])
def test_bad_sweep_file_values_are_one_line(cli_with, tmp_path, line, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'method = "naive"\n{line}\n' if not line.startswith("sweep") else f"{line}\n")
    result = cli_with(["sweep", "--config", str(path), "--dry-run"])
    assert result.exit_code != 0 and message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_sweep_settings_are_typed(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('method = "naive"\ncompile = "no"\n')
    assert sw.load_toml(path).settings["compile"] is False


def test_sweep_skips_finished_cells_and_reports_an_invalid_one(cli_with, tmp_path):
    board = tmp_path / "lb"
    args = ["sweep", "--method", "naive", "--method", "met", "--masker", "random", "--masker",
            "random:size_pct=150", "--seeds", "0", *TINY, "--leaderboard-dir", str(board),
            "--save-dir", str(tmp_path / "runs")]
    first = cli_with(args)
    assert first.exit_code == 1, first.output
    assert "2 ran" in first.output and "1 invalid" in first.output
    assert "size_pct must be between 0 and 100" in first.output
    assert len(_rows(board)) == 2  # the good cells' rows are written
    second = cli_with(args)
    assert "0 ran, 2 already in the leaderboard" in second.output
    assert len(_rows(board)) == 2
    valid = cli_with([*args[:7], *args[9:]])  # without the bad masker: nothing left to run, exit 0
    assert valid.exit_code == 0 and "0 ran" in valid.output, valid.output


def test_sweep_goes_on_after_a_failed_run_and_exits_nonzero(cli_with, tmp_path, monkeypatch):
    import leakbench.runs.pipeline as pipeline

    real = pipeline.run_one

    def flaky(config, registry=None, write=True):
        if config.seed == 1:
            raise RuntimeError("simulated crash in the middle of a run")
        return real(config, registry, write)

    monkeypatch.setattr(pipeline, "run_one", flaky)
    board = tmp_path / "lb"
    result = cli_with(["sweep", "--method", "naive", "--seeds", "0,1,2", *TINY, "--leaderboard-dir", str(board),
                       "--save-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "FAILED" in result.output and "simulated crash" in result.output
    assert "2 ran" in result.output and "1 failed" in result.output
    assert sorted(_rows(board)["seed"]) == [0, 2]  # the run after the failure still ran


def test_dry_run_trains_nothing(cli_with, tmp_path):
    result = cli_with(["sweep", "--method", "met", "--lambda-r", "1,10,100", "--seeds", "0,1", *TINY,
                       "--leaderboard-dir", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("pending") == 6 and "casme:lambda_r=100" in result.output
    assert not result_files(tmp_path)


def test_flag_errors_are_one_line(cli_with, tmp_path):
    result = cli_with(["sweep", "--seeds", "0,x", "--method", "naive", "--leaderboard-dir", str(tmp_path)])
    assert result.exit_code != 0 and "--seeds expects comma-separated numbers" in result.output
    result = cli_with(["sweep", "--seeds", "0", "--leaderboard-dir", str(tmp_path)])
    assert result.exit_code != 0 and "needs at least one method" in result.output


SHIPPED = sorted((Path(__file__).parents[1] / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweep_files_plan_every_cell(cli_with, path):
    """The reproduction configs in sweeps/ stay valid as plugins and flags change."""
    result = cli_with(["sweep", "--config", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    summary = result.output.strip().splitlines()[-1]
    assert " 0 invalid" in summary and " 0 duplicates" in summary, summary
    assert "pending" in result.output


def test_shipped_sweeps_include_the_papers_table_1():
    names = {p.stem for p in SHIPPED}
    assert {"table1-cifar10", "table1-tiny-imagenet", "lambda-r-cifar10"} <= names
