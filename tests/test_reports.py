"""Pictures: ``show`` (from data alone and from a finished run's checkpoints) and ``plot``."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

from leakbench.errors import LeakbenchError
from leakbench.registry import Registry
from leakbench.results import reports
from leakbench.results.leaderboard import append_row, read, result_files
from leakbench.runs.pipeline import run_one
from leakbench.types import RunConfig

TINY_DATASET = "digits:size=8"



@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny MET run, saved under <tmp>/runs/<run_id>/ with its leaderboard row."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("finished")
    config = RunConfig(method="met", dataset=TINY_DATASET, backbone="resnet18:width=8", epochs=2, quiet=True,
                       leaderboard_dir=root / "lb", save_dir=root / "runs")
    return root, run_one(config)


def _crop(png: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return png[top + 2:bottom - 2, left + 2:right - 2, :3]  # inside the axes frame


def _red(region: np.ndarray) -> int:
    return int(((region[..., 0] > 0.6) & (region[..., 1] < 0.45) & (region[..., 2] < 0.45)).sum())


def test_show_without_a_run_draws_original_spoiled_and_the_leak(tmp_path):
    panels = reports.compute_panels("digits:size=16", "binary-corner", per_class=1)
    figure = reports.show_figure(panels, tmp_path / "leak.png", "digits / binary-corner")
    png = mpimg.imread(figure.path)
    assert list(figure.boxes) == ["original", "spoiled", "leak mask"]
    assert png.shape[0] > 200 and png.shape[1] > 600
    for i in range(1, 10):  # class 0's code is four black pixels on a black corner: nothing to see
        original, spoiled, leak = (_crop(png, figure.boxes[row][i]) for row in figure.boxes)
        assert original.shape == spoiled.shape
        changed = np.nonzero(np.abs(original - spoiled).max(axis=2) > 0.6)[0]  # rows of strongly changed pixels
        assert changed.size and changed.max() < original.shape[0] / 16 + 2  # only image row 0 (the leak's)
        assert _red(leak) > 0 and _red(original) == 0  # the leak's pixels are marked


def test_show_a_finished_run_from_its_checkpoints(finished_run, tmp_path):
    root, result = finished_run
    run_id = result.row["run_id"]
    run = reports.find_run(run_id, root / "lb")
    assert run.directory == root / "runs" / run_id and run.row["run_id"] == run_id
    panels = reports.compute_panels(run.config.dataset, run.config.leakage, run, per_class=1)
    assert panels.masker == "casme" and panels.mask is not None
    figure = reports.show_figure(panels, tmp_path / "run.png", f"run {run_id}")
    png = mpimg.imread(figure.path)
    assert list(figure.boxes) == ["original", "spoiled", "mask on spoiled", "masked"]
    overlay = [_red(_crop(png, b)) for b in figure.boxes["mask on spoiled"]]
    assert sum(overlay) > 0  # the learned mask shows
    for i in range(10):
        spoiled, masked = _crop(png, figure.boxes["spoiled"][i]), _crop(png, figure.boxes["masked"][i])
        assert not np.allclose(spoiled, masked, atol=1e-3)


def test_checkpoint_loads_with_weights_only_and_reproduces_the_row(finished_run):
    from leakbench.engine.augment import Normalizer
    from leakbench.engine.evaluation import build_eval_set, evaluate
    from leakbench.engine.session import plan_run

    root, result = finished_run
    run = reports.find_run(str(root / "runs" / result.row["run_id"]), root / "nowhere")  # a folder works too
    plan = plan_run(run.config, Registry())
    val = plan.dataset.load("val", plan.data_root)
    plan.leakage.prepare(val.num_classes, val.images.shape[-1])
    classifier, masker = reports.load_models(run, plan, val.num_classes, val.images.shape[-1], torch.device("cpu"))
    normalize = Normalizer(plan.dataset.mean, plan.dataset.std, torch.device("cpu"))
    eval_set = build_eval_set(val, plan.leakage, "test", plan.recipe.eval_batch_size)
    metrics = evaluate(classifier, masker, eval_set, normalize, plan.recipe.eval_batch_size)
    assert metrics["acc_clean"] == pytest.approx(result.metrics["acc_clean"], abs=1e-6)
    assert metrics["mask_size_pct"] == pytest.approx(result.metrics["mask_size_pct"], rel=1e-4)
    saved = json.loads((run.directory / "config.json").read_text())
    assert saved["method"] == "met" and saved["dataset"] == TINY_DATASET


def test_show_cli_with_and_without_run_and_a_missing_run(cli_with, finished_run, tmp_path):
    root, result = finished_run
    out = tmp_path / "cli.png"
    ok = cli_with(["show", "--run", result.row["run_id"], "--leaderboard-dir", str(root / "lb"), "--per-class", "1",
                   "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert out.stat().st_size > 10_000
    plain = cli_with(["show", "--dataset", "digits", "--leakage", "binary-corner", "--out", str(tmp_path / "p.png")])
    assert plain.exit_code == 0, plain.output
    missing = cli_with(["show", "--run", "0123456789ab", "--leaderboard-dir", str(root / "lb")])
    assert missing.exit_code == 1
    assert "no checkpoint for run '0123456789ab'" in missing.output and "Traceback" not in missing.output
    wrong = cli_with(["show", "--run", result.row["run_id"], "--leaderboard-dir", str(root / "lb"),
                      "--dataset", "digits:size=32"])
    assert wrong.exit_code == 1 and "drop --dataset" in wrong.output


# --------------------------------------------------------------------------- plot


def _fake_rows(directory, rows):
    """Leaderboard rows with made-up metrics: plots are about drawing, not training."""
    from leakbench.results.leaderboard import COLUMNS

    for spec in rows:
        row = dict.fromkeys(COLUMNS, "")
        row.update(run_id=uuid.uuid4().hex[:12], dataset="digits", leakage="binary-corner", strength=1.0,
                   reliability=1.0, leak_stage="after", masker="none", supervision="none", backbone="resnet18",
                   recipe="digits", epochs=15, batch_size=64, lr=0.05, seed=0, config_hash=uuid.uuid4().hex[:16],
                   config_json="{}", acc_spoiled=100.0, leak_following=0.9, acc_clean_masked=None,
                   mask_size_pct=None)
        row.update(spec)
        append_row(directory / "digits.csv", row)


def _board(tmp_path):
    rows = []
    for seed in (0, 1, 2):
        rows.append({"method": "naive", "seed": seed, "acc_clean": 20.0 + seed})
        for lam, acc in ((1, 10.0), (10, 90.0), (100, 35.0)):
            masker = "casme" if lam == 10 else f"casme:lambda_r={lam}"
            rows.append({"method": "met", "masker": masker, "seed": seed, "acc_clean": acc + seed,
                         "acc_clean_masked": acc - 5, "mask_size_pct": 2.0, "leak_following": 0.1})
        for rel, acc in ((1.0, 90.0), (0.7, 93.0), (0.5, 95.0)):
            rows.append({"method": "oracle", "masker": "oracle", "supervision": "leak-mask", "reliability": rel,
                         "seed": seed, "acc_clean": acc - seed, "acc_clean_masked": acc, "leak_following": 0.05})
    _fake_rows(tmp_path, rows)
    return read(result_files(tmp_path))


@pytest.mark.parametrize("x", [None, "lambda_r", "reliability"])
def test_plot_bars_and_curves(tmp_path, x):
    frame = _board(tmp_path)
    out = reports.plot_leaderboard(frame, tmp_path / f"plot-{x}.png", "digits", None, x, registry=Registry())
    png = mpimg.imread(out)
    assert png.shape[0] >= 400 and png.shape[1] >= 600
    ink = (png[..., :3].mean(-1) < 0.9).mean()
    assert 0.01 < ink < 0.6  # something is drawn, and it is not a solid block
    if x is None:  # coloured bars: each metric's colour appears
        for rgb in ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05)):  # tab:blue, tab:orange
            assert (np.abs(png[..., :3] - rgb).sum(-1) < 0.05).sum() > 200


def test_knob_values_come_from_specs_defaults_and_columns(tmp_path):
    frame = _board(tmp_path)
    registry = Registry()
    rows = {(r["method"], r["masker"], r["reliability"]): r for _, r in frame.iterrows()}
    assert reports.knob_value(rows[("met", "casme:lambda_r=100", 1.0)], "lambda_r", registry) == 100
    assert reports.knob_value(rows[("met", "casme", 1.0)], "lambda_r", registry) == 10  # the default
    assert reports.knob_value(rows[("naive", "none", 1.0)], "lambda_r", registry) is None
    assert reports.knob_value(rows[("oracle", "oracle", 0.7)], "reliability", registry) == 0.7


def test_plot_cli_and_its_errors(cli_with, tmp_path):
    _board(tmp_path)
    out = tmp_path / "bars.png"
    ok = cli_with(["plot", "--leaderboard-dir", str(tmp_path), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert out.stat().st_size > 10_000
    curves = cli_with(["plot", "--leaderboard-dir", str(tmp_path), "--x", "lambda_r", "--metric", "acc_clean",
                       "--metric", "mask_size_pct", "--out", str(tmp_path / "c.png")])
    assert curves.exit_code == 0, curves.output
    bad = cli_with(["plot", "--leaderboard-dir", str(tmp_path), "--x", "nonsense"])
    assert bad.exit_code == 1 and "no run has a knob 'nonsense'" in bad.output
    empty = cli_with(["plot", "--leaderboard-dir", str(tmp_path / "none")])
    assert empty.exit_code == 1 and "no leaderboard CSVs" in empty.output
    text = cli_with(["plot", "--leaderboard-dir", str(tmp_path), "--x", "dataset"])
    assert text.exit_code == 1 and "not a numeric knob" in text.output and text.output.count("\n") == 1
    (tmp_path / "a-file").write_text("")
    unwritable = cli_with(["plot", "--leaderboard-dir", str(tmp_path), "--out", str(tmp_path / "a-file" / "p.png")])
    assert unwritable.exit_code == 1 and "cannot write" in unwritable.output and "Traceback" not in unwritable.output
    bare = cli_with(["plot", "--leaderboard-dir", str(tmp_path), "--out", str(tmp_path / "bare")])
    assert bare.exit_code == 0 and (tmp_path / "bare.png").is_file() and "bare.png" in bare.output


def test_find_run_error_is_one_line(tmp_path):
    with pytest.raises(LeakbenchError) as info:
        reports.find_run("feedfacecafe", tmp_path)
    assert "\n" not in str(info.value)


def test_a_broken_checkpoint_is_a_one_line_error(finished_run, tmp_path):
    import shutil

    root, result = finished_run
    copy = tmp_path / result.row["run_id"]
    shutil.copytree(root / "runs" / result.row["run_id"], copy)
    (copy / "masker_decoder.pt").write_bytes(b"not a checkpoint")
    run = reports.find_run(str(copy), tmp_path)
    with pytest.raises(LeakbenchError, match="cannot load the checkpoint") as info:
        reports.compute_panels(run.config.dataset, run.config.leakage, run, per_class=1)
    assert "\n" not in str(info.value)
