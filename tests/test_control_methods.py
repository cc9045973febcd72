"""Control maskers (random, saliency) and baseline methods (cutout, saliency-met, rrr).

Each runs end to end on tiny digits; the pieces that decide the numbers (mask area, top-k
choice, erased squares, the RRR penalty's gradient) are checked directly.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import TINY

from leakbench.engine.recipes import RECIPES
from leakbench.engine.session import plan_run
from leakbench.errors import LeakbenchError
from leakbench.registry import Registry
from leakbench.runs.pipeline import experiment_id, run_one
from leakbench.types import RunConfig

TINY_DATASET = "digits:size=8"



def tiny(tmp_path, **kwargs) -> RunConfig:
    return RunConfig(dataset=TINY_DATASET, backbone="resnet18:width=8", epochs=1, quiet=True,
                     leaderboard_dir=tmp_path / "lb", save_dir=tmp_path / "runs", **kwargs)


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(("method", "masker", "supervision"), [
    ("met", "random", "none"),
    ("met", "random:size_pct=3", "none"),
    ("saliency-met", None, "none"),
    ("cutout", None, "none"),
    ("cutout:size=0.25,p=0.5", None, "none"),
    ("rrr", None, "leak-mask"),
])
def test_runs_end_to_end_on_tiny_digits(tmp_path, method, masker, supervision):
    result = run_one(tiny(tmp_path, method=method, masker=masker))
    row = result.row
    assert 0 <= result.metrics["acc_clean"] <= 100
    assert row["supervision"] == supervision
    has_mask = masker is not None or method == "saliency-met"
    assert (result.metrics["mask_size_pct"] is not None) == has_mask
    if masker == "random:size_pct=3":
        assert 1.5 < result.metrics["mask_size_pct"] < 4.5
    assert (tmp_path / "runs" / row["run_id"] / "classifier.pt").is_file()


def test_cli_runs_new_method_and_explains_a_wrong_masker(cli_with, tmp_path):
    ok = cli_with(["run", "--method", "saliency-met", *TINY, "--leaderboard-dir", str(tmp_path),
                   "--save-dir", str(tmp_path / "runs")])
    assert ok.exit_code == 0, ok.output
    assert "mask_size_pct" in ok.output
    bad = cli_with(["run", "--method", "saliency-met", "--masker", "casme", *TINY, "--leaderboard-dir", str(tmp_path)])
    assert bad.exit_code != 0
    assert "saliency-met" in bad.output and "--method met --masker casme" in bad.output


def test_random_masker_matches_a_runs_mask_size(tmp_path):
    reference = run_one(tiny(tmp_path, method="met", masker="random:size_pct=20"))
    matched = Registry().create("maskers", f"random:match_run={reference.row['run_id']},"
                                           f"leaderboard_dir={tmp_path / 'lb'}")
    assert matched.effective_pct == pytest.approx(reference.metrics["mask_size_pct"], rel=1e-4)
    elsewhere = tmp_path / "copy"  # the same reference row, read from another folder: the same control
    elsewhere.mkdir()
    shutil.copy(tmp_path / "lb" / "digits.csv", elsewhere / "digits.csv")
    ids = {experiment_id(config, plan_run(config, Registry())) for config in (
        tiny(tmp_path, method="met", masker=f"random:match_run={reference.row['run_id']},leaderboard_dir={folder}")
        for folder in (tmp_path / "lb", elsewhere))}
    assert len(ids) == 1
    assert matched.params() == {"size_pct": matched.effective_pct, "match_run": reference.row["run_id"]}
    with pytest.raises(LeakbenchError, match="no run 'nope'"):
        Registry().create("maskers", f"random:match_run=nope,leaderboard_dir={tmp_path / 'lb'}")
    with pytest.raises(LeakbenchError, match="not both"):
        Registry().create("maskers", f"random:match_run={reference.row['run_id']},size_pct=5")


# --------------------------------------------------------------------------- random masker


def test_random_masker_area_is_the_asked_share_and_fresh_per_call():
    masker = Registry().create("maskers", "random:size_pct=12")
    torch.manual_seed(0)
    masker.build(None, 16, RECIPES["paper"], torch.device("cpu"))
    x = torch.zeros(256, 3, 16, 16)
    first, second = masker(x, [], None), masker(x, [], None)
    assert first.shape == (256, 1, 16, 16) and set(first.unique().tolist()) <= {0.0, 1.0}
    assert first.mean().item() == pytest.approx(0.12, abs=0.01)
    assert not torch.equal(first, second)  # a new mask every call
    torch.manual_seed(0)  # the same run seed draws the same masks
    again = Registry().create("maskers", "random:size_pct=12")
    again.build(None, 16, RECIPES["paper"], torch.device("cpu"))
    assert torch.equal(again(x, [], None), first)


@pytest.mark.parametrize("spec", ["random:size_pct=120", "random:size_pct=-1", "saliency:top_pct=0",
                                  "cutout:size=0", "cutout:p=2", "rrr:lambda_rrr=-1"])
def test_impossible_options_are_one_line_errors(spec):
    kind = "methods" if spec.split(":")[0] in ("cutout", "rrr") else "maskers"
    with pytest.raises(LeakbenchError) as info:
        Registry().create(kind, spec)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- saliency masker


class _PixelModel(torch.nn.Module):
    """Both logits read a few chosen pixels with large weights (class 0 with the opposite sign)."""

    def __init__(self, pixels: list[tuple[int, int]], size: int = 8) -> None:
        super().__init__()
        weight = torch.zeros(2, 3, size, size)
        for i, (r, c) in enumerate(pixels):
            weight[1, :, r, c] = 10.0 + i
        weight[1] += 0.01  # every other pixel matters a little
        weight[0] = -weight[1]  # whichever class is predicted, the same pixels matter
        self.weight = torch.nn.Parameter(weight)
        self.bn = torch.nn.BatchNorm1d(2)  # to see that the masker leaves train/eval mode as it was

    def forward(self, x):
        return (x[:, None] * self.weight).flatten(2).sum(-1)


def test_saliency_masker_picks_top_gradient_pixels_even_under_no_grad():
    pixels = [(0, 0), (0, 1), (3, 4)]
    model = _PixelModel(pixels).train()
    masker = Registry().create("maskers", f"saliency:top_pct={100 * 3 / 64}")
    masker.build(model, 8, RECIPES["paper"], torch.device("cpu"))
    torch.manual_seed(0)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():  # as in evaluation
        m = masker(x, [], None)
    assert m.shape == (5, 1, 8, 8) and m.sum(dim=(1, 2, 3)).tolist() == [3.0] * 5
    for r, c in pixels:
        assert bool((m[:, 0, r, c] == 1).all())
    assert model.training and model.weight.grad is None  # mode restored, no parameter gradients left


# --------------------------------------------------------------------------- cutout


def test_cutout_erases_one_clipped_square_to_the_mean():
    from leakbench_builtins.methods.cutout import erase

    torch.manual_seed(0)
    x = torch.randn(64, 3, 16, 16) + 5  # nothing is 0 before erasing
    out = erase(x, 0.5, 1.0)
    zero = out == 0
    assert bool((zero.all(dim=1) == zero.any(dim=1)).all())  # all channels of a pixel together
    erased = zero[:, 0]
    areas = erased.sum(dim=(1, 2))
    assert int(areas.max()) == 64 and int(areas.min()) > 0  # 8x8 inside, clipped at borders
    for i in range(64):  # one axis-aligned rectangle per image
        rows, cols = erased[i].any(1).nonzero().flatten(), erased[i].any(0).nonzero().flatten()
        assert int(areas[i]) == len(rows) * len(cols)
    assert torch.equal(out[~zero], x[~zero])
    assert erase(x, 0.5, 0.0).eq(x).all()  # p = 0 erases nothing


# --------------------------------------------------------------------------- rrr


def _ctx(seed: int = 0):
    from leakbench.engine.backbone import create_classifier
    from leakbench.engine.training import TrainContext, autocast_for, make_optimizer

    torch.manual_seed(seed)
    model = create_classifier("resnet18", 10, 8, channels=(4, 8, 8, 8))
    recipe = RECIPES["paper"]
    masker = Registry().create("maskers", "none")
    return TrainContext(model, masker, make_optimizer(model.parameters(), recipe, torch.device("cpu")), recipe,
                        torch.device("cpu"), autocast_for(torch.device("cpu")))


def test_rrr_penalty_reaches_the_weights_through_double_backward():
    registry = Registry()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    leak = torch.zeros(16, 1, 8, 8, dtype=torch.bool)
    leak[:, :, 0, :4] = True
    after = {}
    for lam in (0.0, 1000.0):
        ctx = _ctx()
        stats = registry.create("methods", f"rrr:lambda_rrr={lam}").train_step(ctx, x, y, leak)
        assert float(stats["penalty"]) > 0
        after[lam] = torch.cat([p.detach().flatten() for p in ctx.classifier.parameters()])
    assert not torch.allclose(after[0.0], after[1000.0])  # the penalty changed the update
    with pytest.raises(ValueError, match="leak mask"):
        registry.create("methods", "rrr").train_step(_ctx(), x, y, None)


def test_rrr_shrinks_input_gradients_on_the_leak():
    registry = Registry()
    torch.manual_seed(1)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    leak = torch.zeros(32, 1, 8, 8, dtype=torch.bool)
    leak[:, :, 0, :4] = True
    x[:, :, 0, :4] = (y[:, None, None] % 2).float() * 4 - 2  # a leak the naive model can use
    last = {}
    for lam in (0.0, 1.0):
        ctx = _ctx(1)
        method = registry.create("methods", f"rrr:lambda_rrr={lam}")
        for _ in range(8):
            stats = method.train_step(ctx, x, y, leak)
        last[lam] = float(stats["penalty"])  # squared leak gradients, measured before the 8th step
    assert last[1.0] < 0.2 * last[0.0]
