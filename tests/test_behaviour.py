"""What MET must do on the embedded default: checked on real training runs (minutes on CPU).

Defaults throughout (digits, binary-corner after augmentation, the digits recipe, seed 0;
MET also on seeds 1 and 2), so these are the numbers `leakbench run --method X` gives a user.
"""

from __future__ import annotations

import pytest

from leakbench.runs.pipeline import run_one
from leakbench.types import RunConfig


@pytest.fixture(scope="module")
def one_thread_for_module():
    """conftest's one_thread is per test, and module fixtures are set up before it: without this
    the runs below train on torch's default thread count, slower under load and unlike the
    one-thread runs the thresholds were measured on."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def results(tmp_path_factory, one_thread_for_module):
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


@pytest.fixture(scope="module")
def met_by_seed(results, tmp_path_factory, one_thread_for_module):
    """acc_clean of default MET on seeds 0, 1, 2; seed 0 is the run ``results`` already made."""
    board = tmp_path_factory.mktemp("met-seeds")
    by_seed = {0: results["met"]["acc_clean"]}
    for seed in (1, 2):
        config = RunConfig(method="met", seed=seed, quiet=True, leaderboard_dir=board, save_dir=None)
        by_seed[seed] = run_one(config).metrics["acc_clean"]
    return by_seed


@pytest.mark.slow
def test_met_recovers_clean_accuracy_on_average_and_on_its_worst_seed(results, met_by_seed):
    # Seed 0 is MET's best seed, so the test above alone would let the average regress. Measured
    # (CPU, one thread; commits e143dff and 86c9c7d alike): acc_clean 96.1 / 76.4 / 60.3 on seeds
    # 0 / 1 / 2, mean 77.6; naive 14.2. An earlier code state gave 98.3 / 82.2 / 65.6, so a seed
    # moves by ~5 points with numerics: margins of 12.6 (mean) and 15.3 (worst seed) points.
    mean = sum(met_by_seed.values()) / len(met_by_seed)
    assert mean >= 65, met_by_seed
    assert min(met_by_seed.values()) >= 45, met_by_seed
    assert mean > results["naive"]["acc_clean"] + 40, (met_by_seed, results["naive"]["acc_clean"])


def test_leak_written_before_augmentation_does_not_collapse_naive_training(tmp_path):
    # crop moves or cuts the code and the zero padding forges 0-bits: a weak, moving cue
    before = run_one(RunConfig(method="naive", leak_stage="before", quiet=True, leaderboard_dir=tmp_path))
    assert before.metrics["acc_clean"] >= 80
