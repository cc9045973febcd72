"""Numbers that can be trusted: the leak-mask rule, experiment identity, the tune split and
fixed evaluation sets, checked through the CLI and the registry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lb_test_plugins
import pytest
import torch
from conftest import TINY

from leakbench.data.splits import tune_mask
from leakbench.engine.evaluation import build_eval_set
from leakbench.engine.session import plan_run
from leakbench.errors import LeakbenchError
from leakbench.registry import Registry, get_plugin_manager
from leakbench.runs.pipeline import config_hash, experiment_id
from leakbench.types import RunConfig


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- 1. the leak-mask rule ------------------------------------------------------------------

def test_a_label_shaped_mask_is_refused_before_training(cli_with, tmp_path):
    """An outside leakage whose mask is a dot at the label's column: one line, before training."""
    result = cli_with(["run", "--method", "oracle", *TINY, "--leakage", "label-dot",
                       "--leaderboard-dir", str(tmp_path)], lb_test_plugins)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: leakage 'label-dot' breaks the leak-mask rule")
    assert "changes with the leak label" in lines[0] and "Traceback" not in result.output
    assert "epoch" not in result.output and not (tmp_path / "digits.csv").exists()


def test_the_same_leak_with_a_label_free_mask_runs(cli_with, tmp_path):
    result = cli_with(["run", "--method", "oracle", *TINY, "--leakage", "label-dot-row",
                       "--leaderboard-dir", str(tmp_path)], lb_test_plugins)
    assert result.exit_code == 0, result.output
    assert len(rows(tmp_path / "digits.csv")) == 1


def test_watermark_masks_the_text_box_not_the_ink(registry):
    leak = registry.create("leakages", "watermark")
    leak.prepare(10, 16)
    images = torch.zeros(10, 3, 16, 16, dtype=torch.uint8)
    out, mask = leak.apply(images, torch.arange(10))
    assert torch.equal(mask, mask[:1].expand_as(mask)), "one box for every label"
    assert int(mask[0].sum()) == 5 * 3  # the 3x5 glyph's box at scale 1
    assert ((out != 0).any(1, keepdim=True) & ~mask).sum() == 0


# -- 2. one experiment, one identity -----------------------------------------------------------

def _ids(config: RunConfig) -> tuple[str, str]:
    plan = plan_run(config, Registry())
    return experiment_id(config, plan), config_hash(config, plan)


def test_explicit_default_flags_hash_like_omitted_ones():
    base = RunConfig(method="naive")
    explicit = RunConfig(method="naive", recipe="digits", epochs=15, batch_size=64, lr=0.05,
                         leakage="binary-corner", dataset="digits:size=16")
    assert _ids(base) == _ids(explicit)


def test_settings_that_change_the_experiment_change_its_id():
    base = _ids(RunConfig(method="naive"))
    assert _ids(RunConfig(method="naive", lr=0.1))[0] != base[0]
    assert _ids(RunConfig(method="naive", eval_split="tune"))[0] != base[0]
    assert _ids(RunConfig(method="naive", leakage="patch:size=4"))[0] != _ids(RunConfig(method="naive",
                                                                                       leakage="patch"))[0]
    other_seed = _ids(RunConfig(method="naive", seed=1))
    assert other_seed[0] == base[0] and other_seed[1] != base[1]  # same experiment, another run
    where = _ids(RunConfig(method="naive", device="cpu", quiet=True, save_dir=None, deterministic=True))
    assert where == base  # where and how it ran is not what it is


def test_plugin_options_count_whether_or_not_they_equal_their_defaults(monkeypatch):
    """Changing a default later must not merge old and new rows: the value is hashed, not the spec."""
    from leakbench_builtins.leakages.patch import Patch

    before = _ids(RunConfig(method="naive", leakage="patch"))
    monkeypatch.setattr(Patch.__dataclass_fields__["size"], "default", 4)
    monkeypatch.setattr(Patch.__init__, "__defaults__", (4, "corner"))
    assert Patch().size == 4
    assert _ids(RunConfig(method="naive", leakage="patch"))[0] != before[0]


def _fake_folder(root: Path, shade: int) -> Path:
    import numpy as np
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = np.full((8, 8, 3), shade + 10 * i + (50 if cls == "b" else 0), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_two_image_folders_are_two_experiments(tmp_path):
    ids = []
    for name, shade in (("one", 10), ("two", 20)):
        folder = _fake_folder(tmp_path / name, shade)
        config = RunConfig(method="naive", dataset="imagefolder", leakage="patch:size=2", data_root=folder)
        plan = plan_run(config, Registry())
        plan.dataset.load("train", plan.data_root)  # prepares the cache whose source key identifies the data
        ids.append(experiment_id(config, plan))
    assert ids[0] != ids[1]  # the same options (none), other data


def test_a_prepared_cache_is_identified_by_its_source_checksum(tmp_path):
    folder = _fake_folder(tmp_path / "one", 10)
    config = RunConfig(method="naive", dataset="imagefolder", leakage="patch:size=2", data_root=folder)
    plan = plan_run(config, Registry())
    assert plan.dataset.identity(plan.data_root)["source"] == "unprepared"
    plan.dataset.load("train", plan.data_root)
    assert plan.dataset.identity(plan.data_root)["source"].startswith("sha256:")


def test_backbone_options_are_recorded_and_identify_the_experiment(tmp_path):
    from click.testing import CliRunner

    from leakbench.cli import cli

    args = ["run", "--method", "naive", "--dataset", "digits:size=8", "--epochs", "1", "--quiet",
            "--leaderboard-dir", str(tmp_path)]
    for backbone in ("resnet18:width=8", "resnet18:width=8,drop_rate=0.1"):
        result = CliRunner().invoke(cli, [*args, "--backbone", backbone])
        assert result.exit_code == 0, result.output
    plain, dropout = rows(tmp_path / "digits.csv")
    assert dropout["backbone"] == "resnet18:width=8,drop_rate=0.1"
    assert "channels=8/16/32/64" in dropout["backbone_config"]
    assert plain["experiment_id"] != dropout["experiment_id"]
    assert _ids(RunConfig(method="naive"))[0] == _ids(RunConfig(method="naive", backbone="resnet18:width=16"))[0]


def test_rows_record_split_identity_and_the_new_metric(tmp_path):
    from click.testing import CliRunner

    from leakbench.cli import cli

    result = CliRunner().invoke(cli, ["run", "--method", "oracle", *TINY, "--leaderboard-dir", str(tmp_path),
                                      "--deterministic"])
    assert result.exit_code == 0, result.output
    (row,) = rows(tmp_path / "digits.csv")
    assert row["eval_split"] == "test" and row["deterministic"] == "True"
    assert len(row["experiment_id"]) == 16 and row["experiment_id"] != row["config_hash"]
    assert float(row["acc_spoiled_masked"]) >= 0 and row["acc_clean_masked"] != ""
    assert json.loads(row["config_json"])["eval_split"] == "test"


# -- 3. the tune split and fixed evaluation sets ---------------------------------------------------

def test_tune_split_is_stratified_fixed_and_disjoint_from_what_trains():
    labels = torch.arange(1000) % 10
    held = tune_mask(labels)
    assert torch.equal(held, tune_mask(labels.clone()))
    torch.manual_seed(123)  # no global random state is involved
    assert torch.equal(held, tune_mask(labels))
    assert torch.bincount(labels[held]).tolist() == [10] * 10


def test_eval_split_tune_trains_on_the_rest_and_scores_there(tmp_path):
    from click.testing import CliRunner

    from leakbench.cli import cli

    result = CliRunner().invoke(cli, ["run", "--method", "naive", *TINY, "--eval-split", "tune",
                                      "--leaderboard-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "scored on the tune split" in result.output
    (row,) = rows(tmp_path / "digits.csv")
    assert row["eval_split"] == "tune"
    plan = plan_run(RunConfig(method="naive", dataset="digits:size=8", backbone="resnet18:width=8", eval_split="tune"),
                    Registry())
    from leakbench.engine.session import build_session

    session = build_session(plan)
    train_n, tune_n = len(session.trainer.data), len(session.eval_set)
    assert train_n + tune_n == 1437 and 130 <= tune_n <= 150


@pytest.mark.parametrize("name", sorted(Registry(get_plugin_manager()).all("datasets")))
def test_every_dataset_has_a_tune_split(name, registry, tmp_path):
    dataset = registry.create("datasets", name)
    try:
        train = dataset.load("train", tmp_path)
    except LeakbenchError:  # needs data this machine does not have (tested in test_contracts)
        pytest.skip(f"{name}: no data here")
    held = tune_mask(train.labels)
    assert 0 < int(held.sum()) < len(train)
    assert set(train.labels[held].tolist()) == set(train.labels.tolist())


def test_evaluation_leaks_depend_on_the_split_only(registry):
    """Random placements and wrong labels are the same for every seed: spread is training noise."""
    from leakbench.types import ImageSet

    data = ImageSet(torch.randint(0, 256, (50, 3, 16, 16), dtype=torch.uint8), torch.arange(50) % 10,
                    [str(i) for i in range(10)])
    leak = registry.create("leakages", "patch:position=random")
    leak.prepare(10, 16)
    first = build_eval_set(data, leak, "test", batch_size=16)
    torch.manual_seed(7)
    again = build_eval_set(data, leak, "test", batch_size=16)
    for name in ("spoiled", "flipped", "wrong", "leak_mask"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.wrong, build_eval_set(data, leak, "tune").wrong)


def test_seeds_score_the_same_images():
    from leakbench.engine.session import build_session

    sets = [build_session(plan_run(RunConfig(method="naive", dataset="digits:size=8", backbone="resnet18:width=8",
                                             leakage="patch:position=random", seed=seed), Registry())).eval_set
            for seed in (0, 1)]
    for name in ("spoiled", "flipped", "wrong", "leak_mask"):
        assert torch.equal(getattr(sets[0], name), getattr(sets[1], name)), name


# -- 4. outputs checked before any data is loaded ------------------------------------------------

@pytest.mark.parametrize("flag", ["--leaderboard-dir", "--save-dir"])
def test_unwritable_output_is_refused_before_data_is_loaded(tmp_path, flag):
    from click.testing import CliRunner

    from leakbench.cli import cli

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # cifar10 is not prepared here: if data were loaded first, the error would be about the data
    result = CliRunner().invoke(cli, ["run", "--method", "naive", "--dataset", "cifar10", "--data-root",
                                      str(tmp_path / "empty"), flag, str(blocker / "sub")])
    assert result.exit_code == 1
    assert f"choose a writable {flag}" in result.output and "cifar10" not in result.output
