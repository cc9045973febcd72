"""Throughput of every registered leakage's ``apply`` on a CIFAR-sized batch, on CPU.

The leak is written inside the training loop on every batch, so a slow leakage slows
every run that uses it. Run with ``pytest benchmarks/bench_leakages.py``; each row's
``extra_info`` holds images per second.
"""

from __future__ import annotations

import pytest
import torch

from leakbench.registry import Registry

REGISTRY = Registry()
BATCH, SIZE, CLASSES = 512, 32, 10


@pytest.mark.parametrize("name", sorted(REGISTRY.all("leakages")))
def test_apply_throughput(benchmark, name: str) -> None:
    leak = REGISTRY.create("leakages", name)
    leak.prepare(CLASSES, SIZE)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=g)
    out, mask = benchmark(leak.apply, images, labels, g)
    assert out.shape == images.shape and mask.shape == (BATCH, 1, SIZE, SIZE)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["images_per_second"] = round(BATCH / benchmark.stats.stats.median)
