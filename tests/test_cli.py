"""The command line: listing, running, errors as one line, leaderboards."""

from __future__ import annotations

import csv
import json

import lb_test_plugins
import pytest
from click.testing import CliRunner
from conftest import TINY

from leakbench.cli import cli


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_list_shows_every_kind_with_provider_and_supervision():
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0, result.output
    for heading in ("datasets", "leakages", "maskers", "methods"):
        assert heading in result.output
    line = next(ln for ln in result.output.splitlines() if ln.strip().startswith("oracle") and "leak-mask" in ln)
    assert "leakbench 0.1.0" in line


def test_list_verbose_shows_options_and_recipe_notes():
    result = CliRunner().invoke(cli, ["list", "datasets", "--verbose"])
    assert result.exit_code == 0
    assert "option size = 16" in result.output
    assert "default recipe: digits" in result.output and "default backbone: resnet18:width=16" in result.output


def test_list_json_is_machine_readable():
    data = json.loads(CliRunner().invoke(cli, ["list", "maskers", "--json"]).output)
    assert {m["name"] for m in data["maskers"]} >= {"none", "oracle", "casme"}


def test_run_appends_one_row_and_prints_a_table(tmp_path):
    board = tmp_path / "boards"
    result = CliRunner().invoke(cli, ["run", "--method", "met", *TINY, "--leaderboard-dir", str(board)])
    assert result.exit_code == 0, result.output
    assert "acc_clean_masked" in result.output and "appended to" in result.output
    (row,) = rows(board / "digits.csv")
    assert row["method"] == "met" and row["masker"] == "casme" and row["dataset"] == "digits:size=8"
    assert row["supervision"] == "none" and row["leakbench_version"] == "0.1.0"
    assert "cpu" in row["device"] and row["seed"] == "0" and row["config_hash"]
    assert "channels=8/16/32/64" in row["backbone_config"] and "8x8 px" in row["dataset_notes"]
    assert json.loads(row["config_json"])["recipe"]["epochs"] == 1


def test_naive_leaves_masked_metrics_empty_not_zero(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--method", "naive", *TINY, "--leaderboard-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (row,) = rows(tmp_path / "digits.csv")
    assert row["acc_clean_masked"] == "" and row["leak_coverage"] == "" and row["acc_clean"] != ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "mett"], "unknown method 'mett' (did you mean 'met'?)"),
        (["--method", "clean,naive"], "repeat the flag: --method clean --method naive"),
        (["--method", "naive", "--leakage", "binary-cornr"], "did you mean 'binary-corner'"),
        (["--method", "met", "--masker", "casme:lambda_r=-1"], "lambda_r must be >= 0"),
        (["--method", "naive", "--epochs", "0"], "--epochs must be at least 1"),
        (["--method", "naive", "--device", "cuda"], "no CUDA GPU is visible"),
        (["--method", "naive", "--masker", "casme"], "trains without a masker"),
        (["--method", "met", "--masker", "none"], "trains against a masker"),
        (["--method", "oracle", "--masker", "casme"], "use --method met --masker casme"),
        (["--method", "naive", "--leak-strength", "1.5"], "between 0 and 1"),
        (["--method", "naive", "--recipe", "fastest"], "unknown recipe 'fastest' (did you mean 'fast'?)"),
        (["--method", "naive", "--backbone", "resnet81"], "unknown backbone 'resnet81'"),
        (["--method", "naive", "--backbone", "resnet18:widht=8"], "backbone 'resnet18' has no option 'widht'"),
        (["--method", "naive", "--backbone", "resnet18:drop_rate=lots"], "option 'drop_rate' expects float"),
        (["--method", "naive", "--backbone", "resnet18:width=0"], "'width' must be a positive integer"),
        (["--method", "naive", "--dataset", "digits:size=2"], "size must be between 8 and 256"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, args, message):
    if "cuda" in args:
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(cli, ["run", *args, "--quiet", "--leaderboard-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "digits.csv").exists()


def test_leak_code_wider_than_the_image_is_refused_before_training(cli_with, tmp_path):
    result = cli_with(["run", "--method", "naive", "--dataset", "many-classes", "--quiet",
                       "--leaderboard-dir", str(tmp_path)], lb_test_plugins)
    assert result.exit_code != 0
    assert "needs 9 pixels in a row, but images are only 4 wide" in result.output
    assert "Traceback" not in result.output


def test_plugin_that_raises_gives_one_line_and_keeps_existing_rows(cli_with, tmp_path):
    ok = cli_with(["run", "--method", "naive", *TINY, "--leaderboard-dir", str(tmp_path)], lb_test_plugins)
    assert ok.exit_code == 0, ok.output
    before = (tmp_path / "digits.csv").read_bytes()
    bad = cli_with(["run", "--method", "naive", *TINY, "--leakage", "exploding", "--leaderboard-dir",
                    str(tmp_path)], lb_test_plugins)
    assert bad.exit_code != 0
    assert "leakage 'exploding' failed: RuntimeError: boom inside the plugin" in bad.output
    assert "Traceback" not in bad.output and bad.output.count("\n") == 1
    assert (tmp_path / "digits.csv").read_bytes() == before


@pytest.mark.parametrize("flag", ["--leaderboard-dir", "--save-dir"])
def test_unwritable_output_folder_is_one_line(tmp_path, flag):
    (tmp_path / "a-file").write_text("")
    other = "--save-dir" if flag == "--leaderboard-dir" else "--leaderboard-dir"
    result = CliRunner().invoke(cli, ["run", "--method", "naive", *TINY, flag, str(tmp_path / "a-file" / "out"),
                                      other, str(tmp_path / "ok")])
    assert result.exit_code != 0
    assert result.output.startswith("Error: cannot ") and f"writable {flag}" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_leaderboard_groups_seeds_and_formats(tmp_path):
    for seed in ("0", "1"):
        result = CliRunner().invoke(cli, ["run", "--method", "naive", *TINY, "--seed", seed,
                                          "--leaderboard-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
    table = CliRunner().invoke(cli, ["leaderboard", "--leaderboard-dir", str(tmp_path)])
    assert table.exit_code == 0 and "±" in table.output and "naive" in table.output
    markdown = CliRunner().invoke(cli, ["leaderboard", "--leaderboard-dir", str(tmp_path), "--format", "markdown"])
    assert markdown.output.startswith("| dataset |")
    as_csv = CliRunner().invoke(cli, ["leaderboard", "--leaderboard-dir", str(tmp_path), "--format", "csv",
                                      "--leakage", "binary-corner"])
    (row,) = list(csv.DictReader(as_csv.output.splitlines()))
    assert row["n"] == "2" and row["acc_clean_std"] != ""


def test_leaderboard_without_results_says_what_to_do(tmp_path):
    result = CliRunner().invoke(cli, ["leaderboard", "--leaderboard-dir", str(tmp_path)])
    assert result.exit_code != 0 and "run `leakbench run --method ...` first" in result.output
