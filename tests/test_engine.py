"""Engine pieces: augmentation, leak plans, schedules, the MET step's gradient order."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from leakbench.engine.augment import Normalizer, crop_flip
from leakbench.engine.backbone import create_classifier
from leakbench.engine.recipes import RECIPES, lr_factor
from leakbench.engine.training import LeakPlan, TrainContext, autocast_for, make_optimizer


def test_crop_flip_moves_masks_with_their_images():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    masks = images[:, :1] > 200
    out, out_mask = crop_flip(images, 2, True, gen, masks)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out_mask, out[:, :1] > 200)  # same gather for both
    assert not torch.equal(out, images)


def test_crop_is_a_shift_with_zero_fill_and_flip_mirrors():
    gen = torch.Generator().manual_seed(1)
    image = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4).expand(200, 3, 4, 4)
    cropped, _ = crop_flip(image, 1, False, gen)
    # every crop is the image shifted by at most one pixel with zeros entering
    for c in cropped[:, 0]:
        nz = c.nonzero()
        assert (nz[:, 0].max() - nz[:, 0].min()) >= 2 and set(c.unique().tolist()) - {0} <= set(range(1, 17))
    flipped, _ = crop_flip(image, 0, True, gen)
    kinds = {bool(torch.equal(f, image[0])) for f in flipped}
    assert kinds == {True, False}
    assert all(torch.equal(f, image[0]) or torch.equal(f, image[0].flip(-1)) for f in flipped)


def test_no_augmentation_is_identity():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert crop_flip(x, 0, False, torch.Generator())[0] is x


def test_normalizer_maps_mean_to_zero():
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    x = norm(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    assert torch.allclose(x[0, 0, 0], torch.tensor([-2.0, 2.0]), atol=0.02)


def test_leak_plan_strength_and_reliability(registry):
    leak = registry.create("leakages", "binary-corner")
    leak.prepare(10, 16)
    labels = torch.arange(10000) % 10
    plan = LeakPlan.build(leak, labels, 10, 0.5, 0.7, "after", torch.Generator().manual_seed(0))
    assert plan.has_leak.float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert (plan.leak_labels == labels).float().mean().item() == pytest.approx(0.7, abs=0.03)
    images = torch.zeros(10000, 3, 16, 16, dtype=torch.uint8)
    spoiled, mask = plan.spoil(images, torch.arange(10000), torch.Generator())
    untouched = ~plan.has_leak
    assert not mask[untouched].any() and torch.equal(spoiled[untouched], images[untouched])
    full = LeakPlan.build(leak, labels, 10, 1.0, 1.0, "after", torch.Generator())
    assert full.has_leak is None and torch.equal(full.leak_labels, labels)


@pytest.mark.parametrize("name", list(RECIPES))
def test_schedules_start_high_and_end_low(name):
    recipe = dataclasses.replace(RECIPES[name], epochs=10)
    factors = [lr_factor(recipe, s, 1000) for s in range(1000)]
    assert max(factors) == pytest.approx(1.0, abs=0.01)
    assert factors[-1] <= 0.011
    assert all(f >= 0 for f in factors)


def test_paper_recipe_has_the_papers_length_per_dataset():
    from leakbench.engine.session import plan_run
    from leakbench.types import RunConfig

    cifar = plan_run(RunConfig(method="naive", dataset="cifar10")).recipe
    assert (cifar.name, cifar.epochs, cifar.batch_size, cifar.lr) == ("paper", 400, 128, 0.1)
    per_epoch = 390
    total = cifar.epochs * per_epoch
    assert [lr_factor(cifar, e * per_epoch, total) for e in (0, 149, 150, 249, 250, 399)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    tiny = plan_run(RunConfig(method="naive", dataset="tiny-imagenet")).recipe
    assert (tiny.name, tiny.epochs, tiny.milestones) == ("paper", 90, cifar.milestones)
    assert plan_run(RunConfig(method="naive", dataset="tiny-imagenet", recipe="fast")).recipe.epochs == 30


def test_met_step_updates_classifier_and_masker_and_keeps_the_encoder_off_the_masker_loss(registry):
    torch.manual_seed(0)
    recipe = RECIPES["paper"]
    device = torch.device("cpu")
    classifier = create_classifier("resnet18", 10, 16, channels=(8, 16, 32, 64))
    masker = registry.create("maskers", "casme")
    masker.build(classifier, 16, recipe, device)
    ctx = TrainContext(classifier, masker, make_optimizer(classifier.parameters(), recipe, device), recipe, device,
                       autocast_for(device))
    method = registry.create("methods", "met")
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    before_c = [p.detach().clone() for p in classifier.parameters()]
    before_m = [p.detach().clone() for p in masker.decoder.parameters()]
    stats = method.train_step(ctx, x, y, None)  # must not hit autograd's in-place error
    assert torch.isfinite(stats["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before_c, classifier.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before_m, masker.decoder.parameters(), strict=True))

    # the masker's gradient never reaches the classifier (features are detached)
    _, feats = classifier(x, features=True)
    mask = masker(x, feats, None)
    loss = masker.objective(mask, torch.randn(8, 10), classifier(x * (1 - mask)), y)
    grads = torch.autograd.grad(loss, [feats[0]], allow_unused=True)
    assert grads[0] is None


def test_gpu_code_path_runs_under_bf16_autocast_and_channels_last(registry):
    """The CUDA path (bf16 autocast, channels_last) exercised on CPU, where autocast also exists."""
    from leakbench.engine.evaluation import build_eval_set, evaluate
    from leakbench.types import ImageSet

    torch.manual_seed(0)
    recipe, device = RECIPES["fast"], torch.device("cpu")
    classifier = create_classifier("resnet18", 10, 16, channels=(8, 16, 32, 64)).to(memory_format=torch.channels_last)
    masker = registry.create("maskers", "casme")
    masker.build(classifier, 16, recipe, device)
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    ctx = TrainContext(classifier, masker, make_optimizer(classifier.parameters(), recipe, device), recipe, device,
                       bf16)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    stats = registry.create("methods", "met").train_step(ctx, x, torch.randint(0, 10, (8,)), None)
    assert torch.isfinite(stats["loss"]) and stats["loss"].dtype == torch.float32
    leak = registry.create("leakages", "binary-corner")
    leak.prepare(10, 16)
    data = ImageSet(torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8), torch.arange(20) % 10,
                    [str(i) for i in range(10)])
    eval_set = build_eval_set(data, leak, "test").to(device)
    metrics = evaluate(classifier, masker, eval_set, Normalizer((0.5,) * 3, (0.25,) * 3, device), 8, bf16)
    assert 0 <= metrics["acc_clean"] <= 100 and 0 <= metrics["leak_coverage"] <= 1
