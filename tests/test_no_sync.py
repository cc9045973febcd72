"""The step loop never waits on the device: checked on CPU by watching the ops that would.

On CUDA a host synchronisation comes from a handful of ATen ops: reading a value back
(``.item()``, ``bool(t)``, ``if t:``) dispatches ``_local_scalar_dense``; ops whose output
shape depends on data (``nonzero``, boolean indexing, ``masked_select``, ``unique``) must
wait for the data. ``torch.cuda.set_sync_debug_mode`` catches these only on a GPU; a
dispatch mode sees the same ops on CPU, so every method, masker and leakage is held to it
in CI. A tensor built from Python data (``torch.tensor([...], device=...)``, seen as
``lift_fresh``) counts too: on CUDA that is a blocking host-to-device copy.
"""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

from leakbench.pipeline import build_session, plan_run
from leakbench.registry import Registry, get_plugin_manager
from leakbench.types import RunConfig

aten = torch.ops.aten
SYNCING = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten.is_nonzero.default,
    aten.equal.default, aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor, aten.bincount.default, aten.histc.default, aten.lift_fresh.default,
}


class SyncWatch(TorchDispatchMode):
    """Records every op that would make the host wait for a CUDA device."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused and (func in SYNCING or _bool_index(func, args)):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def _bool_index(func, args) -> bool:
    """``x[mask]`` with a bool mask is an ``index`` whose output size depends on the data."""
    if func not in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
        return False
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)


@pytest.fixture
def watch():
    """A SyncWatch that ignores optimiser steps: their step counters stay on the host on CUDA
    too (non-capturable Adam/SGD), so reading them is not a device sync."""
    mode = SyncWatch()

    def pause(*_):
        mode.paused += 1

    def resume(*_):
        mode.paused -= 1

    handles = [register_optimizer_step_pre_hook(pause), register_optimizer_step_post_hook(resume)]
    yield mode
    for handle in handles:
        handle.remove()


def test_the_watch_catches_the_usual_culprits(watch):
    x = torch.randn(16)
    with watch:
        x.sum().item()
        _ = x[x > 0]
        if (x > 0).any():
            pass
    assert len(watch.seen) >= 3


def _methods() -> list[str]:
    return sorted(Registry(get_plugin_manager()).all("methods"))


@pytest.mark.parametrize("leak_stage,strength,reliability", [("after", 1.0, 1.0), ("before", 0.5, 0.7)])
@pytest.mark.parametrize("method", _methods())
def test_training_steps_never_wait_for_the_device(method, leak_stage, strength, reliability, watch):
    plan = plan_run(RunConfig(method=method, dataset="digits:size=8,width=8", epochs=1, batch_size=16, quiet=True,
                              leak_stage=leak_stage, strength=strength, reliability=reliability, save_dir=None))
    trainer = build_session(plan).trainer
    trainer.train_mode()
    batches = trainer.batches()
    with watch:
        for _ in range(3):
            stats = trainer.step(next(batches))
    assert watch.seen == [], f"{method}: host syncs in the step loop: {sorted(set(watch.seen))}"
    assert torch.isfinite(stats["loss"])


@pytest.mark.parametrize("leakage", sorted(Registry(get_plugin_manager()).all("leakages")))
def test_leakages_apply_without_waiting_for_the_device(leakage, registry, watch):
    leak = registry.create("leakages", leakage)
    leak.prepare(10, 32)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    leak.apply(images, torch.arange(16) % 10, generator)  # the first call may build per-device constants
    with watch:
        leak.apply(images, torch.arange(16) % 10, generator)
    assert watch.seen == [], f"{leakage}: host syncs in apply: {sorted(set(watch.seen))}"
