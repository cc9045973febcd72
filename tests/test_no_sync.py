"""The step loop never waits on the device: checked on CPU by watching the ops that would.

On CUDA a host synchronisation comes from a handful of ATen ops: reading a value back
(``.item()``, ``bool(t)``, ``if t:``) dispatches ``_local_scalar_dense``; ops whose output
shape depends on data (``nonzero``, boolean indexing, ``masked_select``, ``unique``) must
wait for the data. ``torch.cuda.set_sync_debug_mode`` catches these only on a GPU; a
dispatch mode sees the same ops on CPU, so every method, masker and leakage is held to it
in CI. A tensor built from Python data with elements (``torch.tensor([...], device=...)``,
seen as ``lift_fresh`` of a tensor with at least one dimension) counts too: on CUDA that is a
blocking host-to-device copy. A 0-dim CPU scalar does not: a device kernel takes it as an
argument (``x[i] = True`` lifts one on some torch releases and not on others, so the watch
must not depend on that dispatch detail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from leakbench_builtins.methods.naive import Naive
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

from leakbench import hookimpl
from leakbench.engine.session import build_session, plan_run
from leakbench.registry import Registry, get_plugin_manager
from leakbench.types import RunConfig

aten = torch.ops.aten
SYNCING = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten.is_nonzero.default,
    aten.equal.default, aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor, aten.bincount.default, aten.histc.default,
}


class SyncWatch(TorchDispatchMode):
    """Records every op that would make the host wait for a CUDA device."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused and (func in SYNCING or _bool_index(func, args) or _host_data(func, args)):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def _host_data(func, args) -> bool:
    """``torch.tensor([...])``: a tensor with elements built on the host, then copied over."""
    return func is aten.lift_fresh.default and args[0].dim() > 0


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


def _syncs_in_steps(watch, method: str, registry: Registry | None = None, **settings) -> list[str]:
    """Run three training steps of ``method`` under the watch; return what it saw."""
    plan = plan_run(RunConfig(method=method, dataset="digits:size=8", backbone="resnet18:width=8", epochs=2,
                              batch_size=16, quiet=True, save_dir=None, **settings), registry)
    trainer = build_session(plan).trainer
    trainer.train_mode()
    batches = trainer.batches()
    with watch:
        for _ in range(3):
            stats = trainer.step(next(batches))
    assert torch.isfinite(stats["loss"])
    return watch.seen


@pytest.mark.parametrize("leak_stage,strength,reliability", [("after", 1.0, 1.0), ("before", 0.5, 0.7)])
@pytest.mark.parametrize("method", _methods())
def test_training_steps_never_wait_for_the_device(method, leak_stage, strength, reliability, watch):
    seen = _syncs_in_steps(watch, method, leak_stage=leak_stage, strength=strength, reliability=reliability)
    assert seen == [], f"{method}: host syncs in the step loop: {sorted(set(seen))}"


@dataclass
class ReadsLoss(Naive):
    """Naive, but reads its loss back every step (as a loss-spike guard written naively would)."""

    name: ClassVar[str] = "reads-loss"

    def train_step(self, ctx, x, y, leak_mask):
        stats = super().train_step(ctx, x, y, leak_mask)
        if stats["loss"].item() > 1e6:
            raise RuntimeError("loss exploded")
        return stats


@dataclass
class BuildsWeights(Naive):
    """Naive with class weights built from Python data every step (a host-to-device copy)."""

    name: ClassVar[str] = "builds-weights"

    def train_step(self, ctx, x, y, leak_mask):
        weights = torch.tensor([1.0] * 10, device=x.device)
        with ctx.autocast():
            logits = ctx.classifier(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y, weight=weights)
        ctx.step(loss)
        return {"loss": loss.detach(), "correct": (logits.argmax(1) == y).sum()}


class _InjectedMethods:
    @hookimpl
    def register_methods(self):
        return [ReadsLoss, BuildsWeights]


@pytest.mark.parametrize("method,culprit", [("reads-loss", "_local_scalar_dense"), ("builds-weights", "lift_fresh")])
def test_the_step_check_fails_on_an_injected_wait(method, culprit, watch):
    """The check above can fail: a per-step ``.item()`` and a per-step ``torch.tensor([...])``."""
    pm = get_plugin_manager()
    pm.register(_InjectedMethods())
    seen = _syncs_in_steps(watch, method, Registry(pm))
    assert any(culprit in op for op in seen), seen


def test_a_scalar_written_by_index_is_not_a_wait(watch):
    """A 0-dim scalar reaches the kernel as an argument, whatever dispatch a torch release uses."""
    mask = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    with watch:
        mask[:, :, 0, :3] = True
        mask.masked_fill_(mask, 0.5 > 0.25)
    assert watch.seen == []


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
