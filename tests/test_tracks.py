"""CPU-track recipes: a recipe may name the backbone and data scale it was sized at.

`--recipe cpu` on CIFAR-10 or Tiny ImageNet must give the whole track (width, training subset,
image size) without further flags; anything the user sets explicitly wins; the row says what
ran; and a run spelled out in full is the same experiment as the track's short form.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from leakbench_builtins.datasets.digits import Digits
from test_datasets import make_tiny, tiny_parts  # fake Tiny ImageNet in the official layout

from leakbench import hookimpl
from leakbench.data import datastore
from leakbench.engine.session import plan_run
from leakbench.errors import LeakbenchError
from leakbench.registry import Registry
from leakbench.runs.pipeline import config_hash
from leakbench.types import Recipe, RunConfig


def plan(**kwargs):
    return plan_run(RunConfig(**kwargs), Registry())


@pytest.mark.parametrize(("dataset", "expected"), [("cifar10", "cifar10:limit=20000"),
                                                    ("tiny-imagenet", "tiny-imagenet:limit=50000,size=32")])
def test_cpu_recipe_brings_its_backbone_and_data_scale(dataset, expected):
    track = plan(method="met", dataset=dataset, recipe="cpu")
    assert track.dataset.spec() == expected
    assert track.backbone.text() == "resnet18:width=16"
    assert track.recipe.name == "cpu"


def test_explicit_options_win_over_the_track():
    mine = plan(method="naive", dataset="cifar10:limit=5000", recipe="cpu", backbone="resnet18:width=8")
    assert mine.dataset.spec() == "cifar10:limit=5000" and mine.backbone.text() == "resnet18:width=8"
    assert plan(method="naive", dataset="cifar10", recipe="paper").dataset.spec() == "cifar10"  # all the data
    assert plan(method="naive", dataset="cifar10", recipe="paper").backbone.text() == "resnet18"


def test_short_and_spelled_out_forms_are_one_experiment():
    short = RunConfig(method="met", dataset="cifar10", recipe="cpu")
    full = RunConfig(method="met", dataset="cifar10:limit=20000", recipe="cpu", backbone="resnet18:width=16")
    other = RunConfig(method="met", dataset="cifar10:limit=10000", recipe="cpu")
    hashes = [config_hash(c, plan_run(c, Registry())) for c in (short, full, other)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_a_bad_track_option_is_one_line():
    with pytest.raises(LeakbenchError, match="size must divide 64"):
        plan(method="naive", dataset="tiny-imagenet:size=48", recipe="cpu")


# An outside dataset that ships its own track, run end to end through the CLI.
@dataclass
class TrackDigits(Digits):
    """Digits with a laptop track: 8 px images and a width-8 ResNet unless the user says otherwise."""

    name: ClassVar[str] = "track-digits"
    recipes: ClassVar[dict[str, Recipe]] = {
        "laptop": Recipe("laptop", epochs=1, batch_size=64, lr=0.05, schedule="cosine", backbone="resnet18:width=8",
                         dataset_options={"size": 8}),
    }


class TrackPlugin:
    @staticmethod
    @hookimpl
    def register_datasets():
        return [TrackDigits]


def test_track_runs_through_the_cli_and_the_row_says_what_ran(cli_with, tmp_path):
    result = cli_with(["run", "--method", "naive", "--dataset", "track-digits", "--recipe", "laptop", "--quiet"],
                      TrackPlugin)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "leaderboards" / "track-digits.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["dataset"] == "track-digits:size=8" and row["backbone"] == "resnet18:width=8"
    assert row["recipe"] == "laptop" and int(row["epochs"]) == 1
    assert "channels=8/16/32/64" in row["backbone_config"]


def test_tiny_imagenet_size_downsamples_both_splits_by_block_means(tmp_path):
    base, _ = make_tiny(tmp_path / "src")
    registry = Registry()
    datastore.prepare(registry.create("datasets", "tiny-imagenet"), tmp_path / "root", tiny_parts(base, tmp_path))
    full = registry.create("datasets", "tiny-imagenet")
    small = registry.create("datasets", "tiny-imagenet:size=32")
    assert (full.crop_padding, small.crop_padding) == (8, 4)
    for split in ("train", "val"):
        big, little = full.load(split, tmp_path / "root"), small.load(split, tmp_path / "root")
        assert little.images.shape == (*big.images.shape[:2], 32, 32) and little.images.dtype == torch.uint8
        means = torch.nn.functional.avg_pool2d(big.images.float(), 2).round()
        assert torch.equal(little.images, means.to(torch.uint8))
        assert torch.equal(little.labels, big.labels)
