"""Data-path benchmarks: first-time prepare throughput and loading a prepared split from the cache.

The real archives come from ../shared/data (``$LEAKBENCH_SHARED_DATA`` overrides); without
them only the synthetic decode benchmark runs. Prepare is timed once per archive (one
round: it is seconds long and a second round would only hit the existing cache).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leakbench.data import datastore, extract
from leakbench.registry import Registry

SHARED = Path(os.environ.get("LEAKBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ARCHIVES = {
    "cifar10": [SHARED / "cifar10-jpeg.tar.gz"],
    "tiny-imagenet": [SHARED / f"tiny-imagenet-200.part{i}.tar.gz" for i in range(3)],
}
REGISTRY = Registry()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Each available archive prepared once, so the load benchmarks have a cache to open."""
    roots = {}
    for name, paths in ARCHIVES.items():
        if all(p.exists() for p in paths):
            roots[name] = tmp_path_factory.mktemp(name)
            datastore.prepare(REGISTRY.create("datasets", name), roots[name], paths)
    return roots


def need(prepared, name):
    if name not in prepared:
        pytest.skip(f"{', '.join(p.name for p in ARCHIVES[name])} not in {SHARED}")
    return prepared[name]


@pytest.mark.parametrize("name", list(ARCHIVES))
def test_prepare_throughput(benchmark, prepared, name):
    """First prepare from the archive: checksum, read, decode in parallel, write the cache."""
    root = need(prepared, name).parent / f"{name}-again"
    dataset = REGISTRY.create("datasets", name)
    manifest = benchmark.pedantic(datastore.prepare, args=(dataset, root, ARCHIVES[name]), rounds=1, iterations=1)
    images = sum(split["count"] for split in manifest["splits"].values())
    benchmark.extra_info["images"] = images
    benchmark.extra_info["images_per_s"] = round(images / benchmark.stats.stats.mean)
    benchmark.extra_info["workers"] = extract.worker_count()


@pytest.mark.parametrize("materialise", [False, True], ids=["mmap", "in-ram"])
@pytest.mark.parametrize("name", list(ARCHIVES))
def test_load_from_cache(benchmark, prepared, name, materialise):
    """Both splits from a prepared cache; ``in-ram`` also reads every byte (what a GPU copy costs)."""
    root = need(prepared, name)

    def load():
        dataset = REGISTRY.create("datasets", name)
        splits = [dataset.load(split, root) for split in ("train", "val")]
        if materialise:
            return [s.images.clone() for s in splits]
        return splits

    splits = benchmark(load)
    benchmark.extra_info["images"] = sum(len(s) for s in splits)


def test_decode_throughput_synthetic(benchmark, tmp_path, monkeypatch):
    """Parallel JPEG decode of 8,192 synthetic 64x64 images (no archive needed)."""
    monkeypatch.setattr(extract, "PARALLEL_MIN", 0)
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(8192):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=75)
        blobs.append(buffer.getvalue())
    path = tmp_path / "images.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(blobs), 3, 64, 64)).flush()
    benchmark.pedantic(lambda: sum(extract.decode_chunks(path, blobs, (64, 64))), rounds=3, iterations=1)
    benchmark.extra_info["images_per_s"] = round(len(blobs) / benchmark.stats.stats.mean)
