"""Multi-stage methods (masktune, jtt, groupdro, lff, dfr): the stage contract, supervision, resume.

Every new method runs through the CLI on every leakage of the zoo at tiny settings; a checkpoint
taken mid-schedule (at a stage boundary and inside a stage) continues to the uninterrupted
result; leak labels reach only methods that declare them; clean images never come from the
scored split; an outside package registers a multi-stage method.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from leakbench_builtins.methods.naive import Naive
from test_no_sync import SyncWatch, watch  # noqa: F401  (the fixture, reused)

from leakbench import Stage, hookimpl
from leakbench.data.splits import tune_mask
from leakbench.engine.session import build_session, plan_run
from leakbench.errors import LeakbenchError
from leakbench.registry import Registry, get_plugin_manager
from leakbench.types import RunConfig

TINY = ["--dataset", "digits:size=8", "--backbone", "resnet18:width=8", "--quiet"]
NEW = {"masktune": "none", "jtt": "none", "groupdro": "leak-label", "lff": "none", "dfr": "clean-data"}
LEAKAGES = sorted(Registry().all("leakages"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _trainer(method: str, epochs: int = 3, registry: Registry | None = None, **settings):
    settings = {"strength": 0.9, "reliability": 0.8, **settings}
    plan = plan_run(RunConfig(method=method, dataset="digits:size=8", backbone="resnet18:width=8", epochs=epochs,
                              quiet=True, save_dir=None, **settings), registry)
    return build_session(plan).trainer


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("method", sorted(NEW))
def test_runs_through_the_cli_on_every_leakage(cli_with, tmp_path, method):
    epochs = "2" if method in ("masktune", "jtt") else "1"  # the fewest their stages split into
    for leakage in LEAKAGES:
        size = 8 if _fits(leakage, 8) else 16  # the frequency leak needs more pixels than 8 (Nyquist)
        result = cli_with(["run", "--method", method, "--leakage", leakage, "--dataset", f"digits:size={size}",
                           *TINY[2:], "--epochs", epochs,
                           "--leak-strength", "0.9", "--leak-reliability", "0.9", "--leaderboard-dir",
                           str(tmp_path / "lb"), "--save-dir", str(tmp_path / "runs")])
        assert result.exit_code == 0, f"{method} on {leakage}: {result.output}"
    rows = _rows(tmp_path / "lb" / "digits.csv")
    assert [r["leakage"] for r in rows] == LEAKAGES
    assert {r["supervision"] for r in rows} == {NEW[method]}
    assert {r["epochs"] for r in rows} == {epochs}
    expected = {"masktune": "erm:1+finetune:1", "jtt": "identify:1+upweighted:1", "dfr": "train:1+last-layer:0"}
    assert {r["stages"] for r in rows} == {expected.get(method, "train:1")}
    assert all(r["clean_images"] for r in rows) == (method == "dfr")
    if method == "dfr":
        assert {r["clean_images"] for r in rows} == {"140"}  # 14 per class: the tune split of 8px digits


def _fits(leakage: str, size: int) -> bool:
    try:
        Registry().create("leakages", leakage).prepare(10, size)
    except ValueError:
        return False
    return True


def test_a_schedule_that_cannot_be_split_is_one_line(cli_with, tmp_path):
    for method in ("jtt", "masktune", "masktune:finetune_epochs=3"):
        result = cli_with(["run", "--method", method, *TINY, "--epochs", "1" if "3" not in method else "3",
                           "--leaderboard-dir", str(tmp_path)])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"Error: method '{method}'") and "epochs" in result.output
    assert not (tmp_path / "digits.csv").exists()


@dataclass
class Miscounts(Naive):
    """Stages that do not add up to the run's epochs."""

    name: ClassVar[str] = "miscounts"

    def stages(self, epochs):
        return [Stage("a", epochs), Stage("b", 1)]


@dataclass
class Peeks(Naive):
    """Naive that keeps what the engine told it about each batch."""

    name: ClassVar[str] = "peeks"
    seen: list = field(default_factory=list, init=False, repr=False)

    def train_step(self, ctx, x, y, leak_mask):
        self.seen.append((ctx.index, ctx.leak_labels, ctx.has_leak, ctx.stage))
        return super().train_step(ctx, x, y, leak_mask)


@dataclass
class PeeksLabelled(Peeks):
    """Peeks, declaring leak-label supervision."""

    name: ClassVar[str] = "peeks-labelled"
    supervision: ClassVar[str] = "leak-label"


class _Methods:
    @hookimpl
    def register_methods(self):
        return [Miscounts, Peeks, PeeksLabelled]


def _registry() -> Registry:
    pm = get_plugin_manager()
    pm.register(_Methods())
    return Registry(pm)


def test_stages_must_add_up_to_the_runs_epochs():
    with pytest.raises(LeakbenchError, match=r"stages \(a:2\+b:1\) must add up to the run's 2 epochs"):
        plan_run(RunConfig(method="miscounts", epochs=2), _registry())


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_leak_labels_reach_only_a_method_that_declares_them(strength):
    registry = _registry()
    for name, told in (("peeks", False), ("peeks-labelled", True)):
        trainer = _trainer(name, 1, registry, strength=strength, reliability=0.7)
        idx = next(trainer.batches())
        trainer.step(idx)
        index, leak_labels, has_leak, stage = trainer.method.seen[-1]
        assert torch.equal(index, idx) and stage == ""  # stage is set by fit()
        if not told:
            assert leak_labels is None and has_leak is None
            continue
        plan = trainer.plan
        assert torch.equal(leak_labels, plan.leak_labels[idx])
        expected = plan.has_leak[idx] if strength < 1 else torch.ones(len(idx), dtype=torch.bool)
        assert torch.equal(has_leak, expected)


# --------------------------------------------------------------------------- resume mid-schedule


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("method", "cut"), [
    ("jtt", 1),  # at the stage boundary: the resumed run identifies the error set itself
    ("jtt", 2),  # inside the upweighted stage: error set, weights and fresh model come from the checkpoint
    ("masktune", 2),  # at the boundary before fine-tuning (its frozen ERM model)
    ("lff", 1),  # the biased model, its optimiser and the per-image loss averages
    ("groupdro", 1),  # the group weights
    ("dfr", 3),  # after the last epoch, before the last-layer fit
])
def test_a_checkpoint_mid_schedule_continues_to_the_uninterrupted_result(tmp_path, method, cut):
    epochs = 3
    whole = _trainer(method, epochs)
    whole.fit(progress=False)

    first = _trainer(method, epochs)

    def stop_after(stats):
        if stats.epoch == cut:
            torch.save(first.state_dict(), tmp_path / "checkpoint.pt")
            raise _Stop

    with pytest.raises(_Stop):
        first.fit(progress=False, on_epoch=stop_after)
    resumed = _trainer(method, epochs)
    resumed.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    assert resumed.epoch == cut
    resumed.fit(progress=False)

    assert [h.stage for h in resumed.history] == [h.stage for h in whole.history]
    assert [h.loss for h in resumed.history] == [h.loss for h in whole.history]
    for a, b in zip(whole.base_classifier().state_dict().values(), resumed.base_classifier().state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    for name, module in whole.method.modules().items():
        for a, b in zip(module.state_dict().values(), resumed.method.modules()[name].state_dict().values(),
                        strict=True):
            assert torch.equal(a, b)
    for key, value in whole.method.state_dict().items():
        assert torch.equal(value, resumed.method.state_dict()[key]), key
    if method == "jtt":
        assert [h.stage for h in whole.history] == ["identify", "upweighted", "upweighted"]
        assert torch.equal(resumed.sample_weights, whole.sample_weights)
        assert int(whole.method.errors.sum()) > 0  # wrong and missing leaks give it errors to upweight


def test_a_checkpoint_of_another_methods_state_does_not_fit(tmp_path):
    jtt = _trainer("jtt")
    jtt.fit(progress=False)
    lff = _trainer("lff", 3)
    with pytest.raises(LeakbenchError, match=r"does not fit this run: .*method networks"):
        lff.load_state_dict(jtt.state_dict())
    state = jtt.state_dict()
    state["method"]["state"]["errors"] = state["method"]["state"]["errors"][:5]
    with pytest.raises(LeakbenchError, match="error set does not fit"):
        _trainer("jtt").load_state_dict(state)


# --------------------------------------------------------------------------- the methods' own pieces


def test_jtt_upweights_its_errors_and_restarts_from_the_initial_weights():
    trainer = _trainer("jtt", 3)
    initial = {k: v.clone() for k, v in trainer.base_classifier().state_dict().items()}
    for _ in range(2):  # an identification model that has learnt something
        for idx in trainer.batches():
            trainer.step(idx)
    images, _ = trainer.training_images(spoiled=True)
    wrong = trainer.predict(images).argmax(1) != trainer.data.labels
    trainer.method.upweight(trainer)
    assert torch.equal(trainer.method.errors, wrong) and 0 < int(wrong.sum()) < len(wrong)
    assert torch.equal(trainer.sample_weights, 1 + 5 * wrong.float())
    for key, value in trainer.base_classifier().state_dict().items():
        assert torch.equal(value, initial[key]), key
    drawn = torch.cat(list(trainer.batches()))  # weighted draws: errors come up about 6x as often per image
    per_image = torch.bincount(drawn, minlength=len(wrong)).float()
    ratio = per_image[wrong].mean() / per_image[~wrong].mean()
    assert 3 < float(ratio) < 12


def test_groupdro_moves_weight_to_the_groups_with_high_loss():
    trainer = _trainer("groupdro:step_size=1.0", 1, reliability=0.7)
    method, ctx = trainer.method, trainer.ctx
    c = trainer.data.num_classes
    present = method.weights > 0
    assert float(method.weights.sum()) == pytest.approx(1.0) and int(present.sum()) > c  # wrong-leak groups exist
    idx = next(trainer.batches())
    x, y = trainer.normalize(trainer.images[idx]), trainer.data.labels[idx]
    ctx.leak_labels, ctx.has_leak, ctx.index = trainer.plan.leak_labels[idx], trainer.plan.has_leak[idx], idx
    before = method.weights.clone()
    with torch.no_grad():
        per_image = torch.nn.functional.cross_entropy(ctx.classifier(x), y, reduction="none")
    groups = y * (c + 1) + torch.where(ctx.has_leak, ctx.leak_labels, c)
    loss = torch.zeros(c * (c + 1)).index_add(0, groups, per_image)
    loss = loss / torch.zeros(c * (c + 1)).index_add(0, groups, torch.ones_like(per_image)).clamp(min=1)
    expected = before * torch.exp(loss)
    method.train_step(ctx, x, y, None)
    assert torch.allclose(method.weights, expected / expected.sum(), atol=1e-5)
    assert bool((method.weights[~present] == 0).all())


def test_lff_weights_images_by_relative_difficulty():
    trainer = _trainer("lff", 1)
    method, ctx = trainer.method, trainer.ctx
    idx = next(trainer.batches())
    biased_before = [p.clone() for p in method.biased.parameters()]
    ctx.index = idx
    stats = method.train_step(ctx, trainer.normalize(trainer.images[idx]), trainer.data.labels[idx], None)
    assert 0 < float(stats["mean_weight"]) < 1
    assert bool(method.buffers["seen"][idx].all()) and int(method.buffers["seen"].sum()) == len(idx)
    first = method.buffers["loss_biased"][idx].clone()
    assert bool((first > 0).all())  # a first visit takes the loss as it is
    assert any(not torch.equal(a, b) for a, b in zip(biased_before, method.biased.parameters(), strict=True))


class _Blob(torch.nn.Module):
    """A 'network' whose last feature map is the image's first channel and whose class 0 sums it."""

    def forward_features(self, x):
        return x[:, :1]

    def forward_head(self, a):
        total = a.sum((2, 3))
        return torch.cat([total, -total], 1)


def test_masktune_masks_the_xgradcam_hot_spot_above_mean_plus_two_std():
    from leakbench_builtins.methods.masktune import saliency_mask

    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8) * 0.5  # a graded background: saliency everywhere, low
    x[0, :, 0, :2] = 5.0  # a bright leak-like spot in the top row
    x[1, :, 6:, 6:] = 5.0
    mask = saliency_mask(_Blob(), x, 2.0, lambda: torch.autocast("cpu", enabled=False))
    assert mask.shape == (2, 1, 8, 8)
    assert mask[0, 0, 0, :2].eq(1).all() and int(mask[0].sum()) == 2
    assert mask[1, 0, 6:, 6:].eq(1).all() and int(mask[1].sum()) == 4


def test_dfr_fits_its_last_layer_on_held_out_clean_images_only():
    from leakbench_builtins.methods.dfr import _fit

    trainer = _trainer("dfr", 1)
    trainer.fit(progress=False)
    method = trainer.method
    clean = trainer.data.images[method.indices]
    labels = trainer.data.labels[method.indices]
    assert torch.bincount(labels).unique().numel() == 1  # balanced
    features = trainer.predict(clean, features=True).double().numpy()
    scaler, linear = _fit(features, labels.numpy(), method.chosen_c)
    sklearn_says = torch.as_tensor(linear.predict(scaler.transform(features)))
    agree = (trainer.predict(clean).argmax(1) == sklearn_says).float().mean()
    assert float(agree) >= 0.97  # the head is the fitted regression (float32 vs float64)
    # scored on test: exactly the tune split; scored on tune: a second carve, never a scored image
    tune = tune_mask(trainer.data.labels)
    assert bool(tune[method.indices].all()) and len(method.indices) == 140  # 14 per class, of 144 tune images
    on_tune = _trainer("dfr", 1, eval_split="tune")
    full_labels = _trainer("naive", 1).data.labels
    scored = tune_mask(full_labels)
    trained_on = (~scored).nonzero().flatten()
    used = trained_on[on_tune.method.indices]
    assert not bool(scored[used].any()) and len(used) > 0


def test_per_step_work_of_every_stage_never_waits_for_the_device(watch):  # noqa: F811
    for method in ("masktune", "jtt", "lff", "groupdro"):
        trainer = _trainer(method, 2)
        trainer.train_mode()
        for stage in trainer.stages:
            if stage.begin is not None:
                stage.begin(trainer)  # between stages the host may wait
                trainer.train_mode()
            trainer.ctx.stage = stage.name
            batches = trainer.batches()
            with watch:
                for _ in range(2):
                    stats = trainer.step(next(batches))
            assert torch.isfinite(stats["loss"]), (method, stage.name)
            assert watch.seen == [], f"{method}/{stage.name}: {sorted(set(watch.seen))}"


# --------------------------------------------------------------------------- an outside package

PACKAGE = Path(__file__).parent / "outside_method"


def test_an_installed_package_registers_a_multi_stage_method(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(PACKAGE)], check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LEAKBENCH_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))

    def leakbench(*args):
        return subprocess.run([sys.executable, "-m", "leakbench", *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)

    listed = leakbench("list", "methods")
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if "two-stage" in ln)
    assert "leakbench-two-stage 0.1.0" in line
    ran = leakbench("run", "--method", "two-stage", *TINY, "--epochs", "3", "--leak-reliability", "0.8")
    assert ran.returncode == 0, ran.stderr[-2000:]
    (row,) = _rows(tmp_path / "leaderboards" / "digits.csv")
    assert row["method"] == "two-stage" and row["stages"] == "first:2+second:1" and row["epochs"] == "3"
    assert "method=leakbench-two-stage 0.1.0" in row["providers"]
    epochs = [json.loads(line) for line in (tmp_path / "runs" / row["run_id"] / "epochs.jsonl").read_text().split("\n")
              if line]
    assert [e["stage_no"] for e in epochs] == [1.0, 1.0, 2.0]
    assert epochs[0]["mistakes"] == 0 and epochs[2]["mistakes"] > 0  # its hook ran between the stages
    too_short = leakbench("run", "--method", "two-stage", *TINY, "--epochs", "1")
    assert too_short.returncode == 1 and too_short.stderr.strip().count("\n") == 0, too_short.stderr
    assert "needs at least 2 epochs" in too_short.stderr


def test_stage_is_part_of_the_public_api() -> None:
    import leakbench

    assert leakbench.Stage is Stage and "Stage" in leakbench.__all__
