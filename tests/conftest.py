"""Shared fixtures: a fresh registry per test, a CLI runner wired to it, tiny settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from leakbench.registry import Registry, get_plugin_manager

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS / "plugins"))  # file-based test plugins (not installed)

# Tiny settings: 8x8 digits, width-8 ResNet, one epoch; seconds per run on CPU.
TINY = ["--dataset", "digits:size=8", "--backbone", "resnet18:width=8", "--epochs", "1", "--quiet"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No downloads, and default outputs (leaderboards/, runs/) land in a temp folder, not the repo."""
    monkeypatch.setenv("LEAKBENCH_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a 2-core box: a second intra-op thread mostly waits (10x slower under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def registry() -> Registry:
    return Registry(get_plugin_manager())


@pytest.fixture
def cli_with(monkeypatch):
    """Run the CLI against a registry that also holds the given test plugin modules."""

    def invoke(args: list[str], *plugins, **kwargs):
        from leakbench.cli import cli, common

        pm = get_plugin_manager()
        for module in plugins:
            pm.register(module)
        monkeypatch.setattr(common, "_registry", lambda: Registry(pm))  # where every command looks it up
        return CliRunner().invoke(cli, args, **kwargs)

    return invoke
