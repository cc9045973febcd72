"""``leakbench data prepare|list`` and ``leakbench run`` on prepared data, through the CLI.

The real CIFAR-10 archive from ../shared/data is prepared once per session with the CLI,
checked, and trained on for one short epoch on the CPU.
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_datasets import CIFAR_CLASSES, SHARED, make_cifar_tree, make_folder, make_tar, make_tiny, tiny_parts

from leakbench.cli import cli
from leakbench.registry import Registry

CIFAR_ARCHIVE = SHARED / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("LEAKBENCH_OFFLINE", "1")  # never reach for the network from a test


def invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_prepare_reports_counts_then_reuses_the_cache_until_forced(tmp_path):
    archive = make_tar(make_cifar_tree(tmp_path / "src"), tmp_path / "copy.tar.gz")
    first = invoke("data", "prepare", "cifar10", "--from", archive, "--data-root", tmp_path / "root")
    assert first.exit_code == 0, first.output
    assert "cifar10: prepared in" in first.output and "train 30, val 20 images of 32x32 px, 10 classes" in first.output
    again = invoke("data", "prepare", "cifar10", "--from", archive, "--data-root", tmp_path / "root")
    assert "already prepared" in again.output
    forced = invoke("data", "prepare", "cifar10", "--from", archive, "--data-root", tmp_path / "root", "--force")
    assert forced.exit_code == 0 and "prepared in" in forced.output
    assert "already prepared" in invoke("data", "prepare", "cifar10", "--data-root", tmp_path / "root").output


def test_list_shows_state_counts_size_and_source(tmp_path):
    tree = make_cifar_tree(tmp_path / "src")
    assert invoke("data", "prepare", "cifar10", "--from", tree, "--data-root", tmp_path / "root").exit_code == 0
    result = invoke("data", "list", "--data-root", tmp_path / "root")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert lines["cifar10"].split()[1:4] == ["prepared", "30", "20"]
    assert "KiB" in lines["cifar10"] and "cifar10-jpeg" in lines["cifar10"]
    assert "missing" in lines["tiny-imagenet"] and "in place" in lines["imagefolder"]
    data = json.loads(invoke("data", "list", "--data-root", tmp_path / "root", "--json").output)
    (row,) = [r for r in data["datasets"] if r["dataset"] == "cifar10"]
    assert row["train"] == 30 and row["bytes"] > 30 * 3072 and len(row["stats"]["train"]["mean"]) == 3


def test_prepare_tiny_imagenet_from_repeated_from_options(tmp_path):
    parts = tiny_parts(make_tiny(tmp_path / "src")[0], tmp_path)
    result = invoke("data", "prepare", "tiny-imagenet", *(a for p in parts for a in ("--from", p)),
                    "--data-root", tmp_path / "root")
    assert result.exit_code == 0, result.output
    assert "train 12, val 6 images of 64x64 px, 3 classes" in result.output


@pytest.mark.parametrize("order", ["dataset first", "dataset last", "options between"])
def test_prepare_tiny_imagenet_from_several_paths_after_one_from_as_a_shell_glob_gives(tmp_path, order):
    parts = tiny_parts(make_tiny(tmp_path / "src")[0], tmp_path)
    root = ("--data-root", tmp_path / "root")
    args = {"dataset first": ("tiny-imagenet", "--from", *parts, *root),
            "dataset last": (*root, "--from", *parts, "tiny-imagenet"),
            "options between": ("--from", *parts[:2], "--force", "--from", parts[2], "tiny-imagenet", *root)}[order]
    result = invoke("data", "prepare", *args)
    assert result.exit_code == 0, result.output
    assert "train 12, val 6 images of 64x64 px, 3 classes" in result.output
    listed = json.loads(invoke("data", "list", "--data-root", tmp_path / "root", "--json").output)
    (row,) = [r for r in listed["datasets"] if r["dataset"] == "tiny-imagenet"]
    assert row["source"] == "part0.tar.gz, part1.tar.gz, part2.tar.gz"


def test_paths_after_one_from_still_need_a_dataset_and_existing_files(tmp_path):
    parts = tiny_parts(make_tiny(tmp_path / "src")[0], tmp_path)
    assert "no such file or folder" in error_line(invoke("data", "prepare", "tiny-imagenet", "--from", parts[0],
                                                         tmp_path / "nope.tar.gz", "--data-root", tmp_path))
    line = error_line(invoke("data", "prepare", "tiny-imagenet", "--from", *parts[1:], "--data-root", tmp_path))
    assert "no wnids.txt" not in line and "all three" in line and "part*.tar.gz" in line
    missing = invoke("data", "prepare", "--from", *parts)  # the last path is taken as DATASET
    assert missing.exit_code != 0 and "unknown dataset" in missing.output


def test_prepare_imagefolder_in_place(tmp_path):
    make_folder(tmp_path / "mine")
    result = invoke("data", "prepare", "imagefolder:size=16", "--data-root", tmp_path / "mine")
    assert result.exit_code == 0, result.output
    assert "train 9, val 3 images of 16x16 px, 3 classes" in result.output
    line = error_line(invoke("data", "prepare", "imagefolder", "--from", tmp_path, "--data-root", tmp_path / "mine"))
    assert "without --from" in line


def test_prepare_errors_are_one_line(tmp_path):
    assert "needs no preparation" in error_line(invoke("data", "prepare", "digits", "--data-root", tmp_path))
    line = error_line(invoke("data", "prepare", "cifar10", "--data-root", tmp_path))
    assert f"leakbench data prepare cifar10 --from cifar10-jpeg.tar.gz --data-root {tmp_path}" in line
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        tar.addfile(tarfile.TarInfo("../../outside.jpg"))
    assert "outside the target folder" in error_line(invoke("data", "prepare", "cifar10", "--from", bad))
    assert "unknown dataset 'cifar11'" in error_line(invoke("data", "prepare", "cifar11"))


def test_run_without_prepared_data_stops_with_one_line_naming_the_command(tmp_path):
    line = error_line(invoke("run", "--method", "naive", "--dataset", "cifar10", "--data-root", tmp_path / "none",
                             "--leaderboard-dir", tmp_path, "--quiet"))
    assert str(tmp_path / "none") in line and "leakbench data prepare cifar10 --from" in line


# --- the real CIFAR-10 archive ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory) -> Path:
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"{CIFAR_ARCHIVE} is not there (the shared offline archives live in ../shared/data)")
    root = tmp_path_factory.mktemp("cifar-real")
    result = invoke("data", "prepare", "cifar10", "--from", CIFAR_ARCHIVE, "--data-root", root)
    assert result.exit_code == 0, result.output
    assert "train 50,000, val 10,000 images of 32x32 px, 10 classes" in result.output
    return root


def test_real_cifar10_counts_shapes_labels_and_classes(real_cifar):
    dataset = Registry().create("datasets", "cifar10")
    train, val = dataset.load("train", real_cifar), dataset.load("val", real_cifar)
    assert train.images.shape == (50_000, 3, 32, 32) and val.images.shape == (10_000, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.class_names == CIFAR_CLASSES
    assert torch.bincount(train.labels).tolist() == [5000] * 10 and torch.bincount(val.labels).tolist() == [1000] * 10
    mean = train.images.sum((0, 2, 3), dtype=torch.float64) / (50_000 * 32 * 32 * 255)
    assert torch.allclose(mean.float(), torch.tensor(dataset.mean), atol=0.005)  # JPEG copy ~ published statistics
    listed = invoke("data", "list", "--data-root", real_cifar).output
    assert "50,000" in listed and "(checksum verified)" in listed


def test_real_cifar10_short_run_through_the_cli(real_cifar, tmp_path):
    # limit shrinks only the train split: the narrow backbone keeps scoring all 10,000 val images quick on a CPU
    result = invoke("run", "--method", "naive", "--dataset", "cifar10:limit=128", "--backbone", "resnet18:width=8",
                    "--epochs", "1", "--batch-size", "64", "--data-root", real_cifar, "--device", "cpu", "--quiet",
                    "--leaderboard-dir", tmp_path / "boards", "--save-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "boards" / "cifar10.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["dataset"] == "cifar10:limit=128" and row["method"] == "naive"
    assert "first 128 train images" in row["dataset_notes"] and "val split is always whole" in row["dataset_notes"]
    assert 0 <= float(row["acc_clean"]) <= 100
