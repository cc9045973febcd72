"""Every registered plugin of every kind honours its contract on tiny data on CPU.

Parametrised from the registry, so a newly registered plugin is checked without edits.
"""

from __future__ import annotations

import pytest
import torch

from leakbench.engine.backbone import create_classifier
from leakbench.engine.recipes import RECIPES
from leakbench.errors import LeakbenchError
from leakbench.registry import Registry
from leakbench.runs.pipeline import run_one
from leakbench.types import ImageSet, RunConfig

REGISTRY = Registry()


def names(kind):
    return sorted(REGISTRY.all(kind))


@pytest.mark.parametrize("name", names("datasets"))
def test_dataset_loads_uint8_images_or_says_how_to_get_them(name, tmp_path):
    dataset = REGISTRY.create("datasets", name)
    try:
        split = dataset.load("val", tmp_path)
    except LeakbenchError as exc:  # needs data this machine does not have: one actionable line
        assert "\n" not in str(exc) and str(exc)
        return
    assert isinstance(split, ImageSet)
    assert split.images.dtype == torch.uint8 and split.images.ndim == 4 and split.images.shape[1] == 3
    assert split.labels.dtype == torch.int64 and split.labels.shape == (split.images.shape[0],)
    assert 0 <= int(split.labels.min()) and int(split.labels.max()) < split.num_classes
    assert len(dataset.mean) == 3 and len(dataset.std) == 3 and min(dataset.std) > 0


def _built_masker(name):
    """A masker built on a tiny ResNet, with a batch, its features and a leak mask in row 0."""
    torch.manual_seed(0)
    classifier = create_classifier("resnet18", 10, 16, channels=(8, 16, 32, 64))
    masker = REGISTRY.create("maskers", name)
    masker.build(classifier, 16, RECIPES["paper"], torch.device("cpu"))
    x = torch.randn(4, 3, 16, 16)
    leak_mask = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    leak_mask[:, :, 0, :4] = True
    _, feats = classifier(x, features=True)
    return classifier, masker, x, feats, leak_mask


@pytest.mark.parametrize("name", names("maskers"))
def test_masker_gives_a_soft_mask_of_the_image_shape_or_none(name):
    _, masker, x, feats, leak_mask = _built_masker(name)
    m = masker(x, feats, leak_mask)
    if m is None:
        assert masker.modules() == {}
        return
    assert m.shape == (4, 1, 16, 16) and m.dtype.is_floating_point
    assert float(m.detach().min()) >= 0 and float(m.detach().max()) <= 1
    if masker.learned:
        assert masker.modules() and masker.optimizer is not None


@pytest.mark.parametrize("name", names("maskers"))
def test_masker_runs_in_fp32_inside_bf16_autocast(name):
    """On CUDA the engine calls maskers under bf16 autocast. A bf16 sigmoid saturates to exactly 1
    from a logit of about 6.25 (fp32: 16.75) and saturated cells get no gradient, so masker networks
    opt out of autocast: the mask is the one computed without it, to the bit."""
    classifier, masker, x, feats, leak_mask = _built_masker(name)
    plain = masker(x, feats, leak_mask)
    if plain is None:
        return
    deterministic = torch.equal(plain, masker(x, feats, leak_mask))  # the random masker draws anew each call
    convs = [m for net in masker.modules().values() for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    out_dtypes: list[torch.dtype] = []
    hooks = [conv.register_forward_hook(lambda mod, inp, out: out_dtypes.append(out.dtype)) for conv in convs]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = masker(x, feats, leak_mask)
            assert not out_dtypes or set(out_dtypes) == {torch.float32}, out_dtypes
            _, feats_bf16 = classifier(x, features=True)  # what the engine passes: bf16 features
            assert feats_bf16[-1].dtype == torch.bfloat16
            from_bf16 = masker(x, feats_bf16, leak_mask)
    finally:
        for hook in hooks:
            hook.remove()
    # every conv module that ran (a masker may also use a conv's weights functionally) ran in fp32
    assert len(out_dtypes) % 2 == 0 and bool(out_dtypes) == bool(convs), out_dtypes
    assert set(out_dtypes) <= {torch.float32}, out_dtypes
    assert inside.dtype == from_bf16.dtype == torch.float32
    assert float(from_bf16.detach().min()) >= 0 and float(from_bf16.detach().max()) <= 1
    if deterministic:
        assert torch.equal(inside, plain)


def _fewest_epochs(method) -> int:
    """1, or the fewest epochs a multi-stage method's schedule can be split into (at least one per stage)."""
    return next(e for e in range(1, 10) if _splits(method, e))


def _splits(method, epochs: int) -> bool:
    try:
        return sum(s.epochs for s in method.stages(epochs)) == epochs
    except ValueError:
        return False


@pytest.mark.parametrize("name", names("methods"))
def test_method_trains_and_evaluates_one_epoch(name, tmp_path):
    method = REGISTRY.create("methods", name)
    config = RunConfig(method=name, dataset="digits:size=8", backbone="resnet18:width=8",
                       epochs=_fewest_epochs(method), quiet=True, leaderboard_dir=tmp_path)
    result = run_one(config)
    assert 0 <= result.metrics["acc_clean"] <= 100
    assert result.row["supervision"] in ("none", "leak-label", "leak-mask", "clean-data", "clean-data+leak-mask")
    assert result.row["stages"] == "+".join(f"{s.name}:{s.epochs}" for s in method.stages(config.epochs))
    assert (result.row["clean_images"] is not None) == (method.supervision == "clean-data")
    assert (result.metrics["acc_clean_masked"] is not None) == (result.row["masker"] != "none")
    assert result.leaderboard_path.exists()
    assert method.supervision in result.row["supervision"] or method.supervision == "none"
