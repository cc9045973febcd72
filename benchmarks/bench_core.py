"""CPU micro-benchmarks of the hot paths (pytest-benchmark; run with `tox -e bench`).

Small sizes so they finish on a laptop; `leakbench bench` measures whole runs on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from leakbench.engine.backbone import create_classifier
from leakbench.engine.recipes import RECIPES
from leakbench.engine.training import TrainContext, autocast_for, make_optimizer
from leakbench.registry import Registry

REGISTRY = Registry()
DEVICE = torch.device("cpu")


def context(masker_name: str, size: int = 32, width: int = 16):
    torch.manual_seed(0)
    classifier = create_classifier("resnet18", 10, size, channels=tuple(width * 2**i for i in range(4)))
    masker = REGISTRY.create("maskers", masker_name)
    masker.build(classifier, size, RECIPES["paper"], DEVICE)
    return TrainContext(classifier, masker, make_optimizer(classifier.parameters(), RECIPES["paper"], DEVICE),
                        RECIPES["paper"], DEVICE, autocast_for(DEVICE))


def batch(n=64, size=32):
    return torch.randn(n, 3, size, size), torch.randint(0, 10, (n,))


def test_masker_forward(benchmark):
    ctx = context("casme")
    x, _ = batch()
    with torch.no_grad():
        _, feats = ctx.classifier(x, features=True)
        benchmark(ctx.masker, x, feats, None)


@pytest.mark.parametrize("method", ["naive", "met"])
def test_training_step(benchmark, method):
    ctx = context("casme" if method == "met" else "none")
    x, y = batch()
    step = REGISTRY.create("methods", method)
    benchmark.extra_info["images_per_step"] = x.shape[0]
    benchmark(step.train_step, ctx, x, y, None)
