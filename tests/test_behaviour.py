"""What MET must do on the embedded default: checked on real training runs (about 80 s).

Defaults throughout (digits, binary-corner after augmentation, the digits recipe, seed 0),
so these are the numbers `leakbench run --method X` gives a user.
"""

from __future__ import annotations

import pytest

from leakbench.pipeline import run_one
from leakbench.types import RunConfig


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    board = tmp_path_factory.mktemp("boards")
    return {m: run_one(RunConfig(method=m, seed=0, quiet=True, leaderboard_dir=board, save_dir=None)).metrics
            for m in ("naive", "clean", "oracle", "met")}


def test_naive_learns_the_leak_and_fails_on_clean_images(results):
    assert results["naive"]["acc_spoiled"] >= 95
    assert results["naive"]["acc_clean"] <= 35
    assert results["naive"]["leak_following"] >= 0.8


def test_clean_training_is_the_upper_reference(results):
    assert results["clean"]["acc_clean"] >= 90


def test_oracle_masking_recovers_clean_accuracy(results):
    assert results["oracle"]["acc_clean"] >= 85
    assert results["oracle"]["leak_coverage"] == pytest.approx(1.0)
    assert results["oracle"]["leak_mask_share"] == pytest.approx(1.0)


def test_met_finds_the_leak_and_recovers_clean_accuracy(results):
    met = results["met"]
    assert met["acc_clean"] >= 60
    assert met["acc_clean_masked"] >= 80
    assert met["leak_coverage"] >= 0.7
    assert met["acc_clean"] > results["naive"]["acc_clean"] + 25


def test_leak_written_before_augmentation_does_not_collapse_naive_training(tmp_path):
    # crop moves or cuts the code and the zero padding forges 0-bits: a weak, moving cue
    before = run_one(RunConfig(method="naive", leak_stage="before", quiet=True, leaderboard_dir=tmp_path))
    assert before.metrics["acc_clean"] >= 80
