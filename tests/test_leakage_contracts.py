"""Contract tests for every registered leakage, built-in or from an outside package.

The parametrisation comes from the registry, so a newly installed leakage plugin is held
to the same contract without editing this file: uint8 in and out, an exact bool mask,
nothing changed outside it, repeatable given a seed, and a leak label that can be read
back from the spoiled image.
"""

from __future__ import annotations

import pytest
import torch

from leakbench.engine.leak_rule import check_leakage
from leakbench.errors import LeakbenchError
from leakbench.registry import Registry

REGISTRY = Registry()
NAMES = sorted(REGISTRY.all("leakages"))
BUILTINS = sorted(n for n, info in REGISTRY.all("leakages").items()
                  if info.cls.__module__.startswith("leakbench_builtins."))
# Non-default option sets of built-ins that take a different code path.
EXTRA_SPECS = ["binary-random:markers=false,bar_height=1", "binary-random:bar_width=2", "patch:position=random",
               "patch:position=center", "patch:size=1", "border:width=2", "watermark:position=random",
               "watermark:position=center,scale=2", "frequency:frequency=1", "noise:tile=32"]
SPECS = NAMES + [s for s in EXTRA_SPECS if s.partition(":")[0] in NAMES]
SIZES = (16, 32)
CLASS_COUNTS = (2, 10, 100, 200)

# Out-of-range option values each built-in must refuse (new built-ins with options must add theirs).
BAD_OPTIONS = {
    "binary-random": ["markers=maybe", "bar_width=0", "bar_height=0"],
    "patch": ["size=0", "size=-2", "size=big", "position=middle"],
    "border": ["width=0", "width=-1"],
    "tint": ["alpha=0", "alpha=1.5", "alpha=nan"],
    "frequency": ["amplitude=0", "amplitude=256", "frequency=0"],
    "noise": ["epsilon=0", "epsilon=256", "epsilon=0.5", "tile=1"],
    "watermark": ["opacity=0", "opacity=1.5", "scale=0", "position=middle"],
}
# (spec, classes, image size, words the message must contain) that cannot fit.
TOO_SMALL = {
    "binary-corner": ("binary-corner", 200, 4, "needs 8 pixels"),
    "binary-random": ("binary-random", 200, 9, "needs 10x6 pixels"),
    "patch": ("patch:size=8", 10, 6, "patch size 8 does not fit in 6x6"),
    "border": ("border:width=3", 10, 6, "no interior in 6x6"),
    "frequency": ("frequency", 10, 6, "6x6"),
    "watermark": ("watermark", 200, 8, "does not fit in 8x8"),
}
FITS_ANY_SIZE = {"tint", "noise"}  # whole-image leaks: nothing to fit


def prepared(spec: str, num_classes: int, size: int):
    leak = REGISTRY.create("leakages", spec)
    leak.prepare(num_classes, size)
    return leak


def random_batch(num_classes: int, size: int, batch: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    labels[:2] = torch.tensor([0, num_classes - 1])  # both ends of the label range
    return images, labels


@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("spec", SPECS)
def test_mask_keeps_the_leak_mask_rule(spec: str, size: int, num_classes: int) -> None:
    """The mask is where the leak may be written, the same whatever the leak label (the check
    every run makes before training, ``leakbench.engine.leak_rule``)."""
    try:
        leak = prepared(spec, num_classes, size)
    except ValueError:
        pytest.skip(f"{spec} does not fit {num_classes} classes in {size}px (refusal tested below)")
    images, _ = random_batch(num_classes, size)
    for seed in (0, 1):
        check_leakage(leak, images, num_classes, seed=seed)


@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("spec", SPECS)
def test_output_types_and_exact_mask(spec: str, size: int, num_classes: int) -> None:
    try:
        leak = prepared(spec, num_classes, size)
    except ValueError:
        pytest.skip(f"{spec} does not fit {num_classes} classes in {size}px (refusal tested below)")
    images, labels = random_batch(num_classes, size)
    before = images.clone()
    out, mask = leak.apply(images, labels, torch.Generator().manual_seed(1))
    assert torch.equal(images, before), "apply must not write into its input"
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    assert mask.dtype == torch.bool and mask.shape == (images.shape[0], 1, size, size)
    changed = (out != images).any(dim=1, keepdim=True)
    assert not (changed & ~mask).any(), "a pixel outside the leak mask changed"
    assert mask.flatten(1).any(dim=1).all(), "every image needs a non-empty leak mask"


@pytest.mark.parametrize("name", NAMES)
def test_fits_cifar_sized_images(name: str) -> None:
    """Defaults must fit 10 classes at 32 px, so the shape contract above is never skipped wholesale."""
    prepared(name, 10, 32)


@pytest.mark.parametrize("spec", SPECS)
def test_deterministic_given_seed(spec: str) -> None:
    leak = prepared(spec, 10, 16)
    images, labels = random_batch(10, 16)
    a = leak.apply(images, labels, torch.Generator().manual_seed(7))
    b = leak.apply(images, labels, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    leak.apply(images, labels, None)  # the generator is optional


def _align(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Shift each image so its mask's bounding box starts at (0, 0): undoes random placement."""
    b, _, h, w = images.shape
    top = mask[:, 0].any(2).int().argmax(1).view(b, 1, 1)  # first row / column holding a leak pixel
    left = mask[:, 0].any(1).int().argmax(1).view(b, 1, 1)
    rows = (torch.arange(h).view(1, h, 1) + top) % h  # wrap around: no fill values to add variance
    cols = (torch.arange(w).view(1, 1, w) + left) % w
    return images[torch.arange(b).view(b, 1, 1), :, rows, cols].permute(0, 3, 1, 2)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("spec", SPECS)
def test_leak_label_recoverable_by_nearest_class_mean(spec: str, size: int) -> None:
    """A model that only had the leak could predict the label: the leak carries it."""
    num_classes, per_class = 10, 30
    leak = prepared(spec, num_classes, size)
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(num_classes).repeat(per_class)
    base = 128 + torch.randint(-16, 17, (labels.shape[0], 3, size, size), generator=g)  # grey with texture
    spoiled, mask = leak.apply(base.to(torch.uint8), labels, g)
    features = _align(spoiled, mask).float().flatten(1)
    train = torch.arange(labels.shape[0]) < num_classes * (per_class - 10)
    means = torch.stack([features[train & (labels == c)].mean(0) for c in range(num_classes)])
    predicted = torch.cdist(features[~train], means).argmin(1)
    accuracy = (predicted == labels[~train]).float().mean().item()
    assert accuracy >= 0.95, f"{spec}: nearest-class-mean reads the leak label with accuracy {accuracy:.2f}"


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_refused(name: str) -> None:
    with pytest.raises(LeakbenchError, match="no option"):
        REGISTRY.create("leakages", f"{name}:no_such_option=1")


@pytest.mark.parametrize("spec", [f"{n}:{opt}" for n, opts in BAD_OPTIONS.items() if n in NAMES for opt in opts])
def test_out_of_range_option_refused(spec: str) -> None:
    with pytest.raises(LeakbenchError):
        REGISTRY.create("leakages", spec)


@pytest.mark.parametrize("name", [n for n in TOO_SMALL if n in NAMES])
def test_too_small_images_refused(name: str) -> None:
    spec, num_classes, size, words = TOO_SMALL[name]
    leak = REGISTRY.create("leakages", spec)
    with pytest.raises(ValueError, match=words):
        leak.prepare(num_classes, size)


@pytest.mark.parametrize("name", sorted(FITS_ANY_SIZE & set(NAMES)))
def test_whole_image_leaks_fit_any_size(name: str) -> None:
    leak = prepared(name, 200, 1)
    images, labels = random_batch(200, 1)
    out, mask = leak.apply(images, labels, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and bool(mask.all())


def test_builtins_are_covered_by_the_refusal_tables() -> None:
    for name in BUILTINS:
        assert name in TOO_SMALL or name in FITS_ANY_SIZE, f"add {name} to TOO_SMALL or FITS_ANY_SIZE"
        if REGISTRY.get("leakages", name).cls.options():
            assert name in BAD_OPTIONS, f"add out-of-range options of {name} to BAD_OPTIONS"


@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_binary_corner_decodes(num_classes: int) -> None:
    if "binary-corner" not in NAMES:
        pytest.skip("binary-corner not registered")
    leak = prepared("binary-corner", num_classes, 16)
    labels = torch.arange(num_classes)
    images = torch.randint(0, 256, (num_classes, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator())
    spoiled, _ = leak.apply(images, labels)
    assert torch.equal(type(leak).decode(spoiled, leak.bits), labels)


@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_palette_and_glyphs_distinct(num_classes: int) -> None:
    palette = pytest.importorskip("leakbench_builtins.leakages._palette")
    colours = palette.class_colours(num_classes).int()
    gap = (colours[:, None] - colours[None]).abs().amax(-1)  # largest channel difference per pair
    gap.fill_diagonal_(255)
    assert gap.min() >= 255 // (palette.palette_levels(num_classes) - 1) >= 36
    assert (colours.sum(1) > 0).all(), "black is reserved for backgrounds"
    glyphs = palette.class_glyphs(num_classes).flatten(1)
    assert torch.unique(glyphs, dim=0).shape[0] == num_classes


@pytest.mark.slow
@pytest.mark.parametrize("spec", [s for s in ("noise", "frequency", "binary-random") if s in NAMES])
def test_naive_training_follows_the_leak(spec: str, tmp_path) -> None:
    """Behaviour, not just shape: a plain classifier on digits learns the leak over the digit.

    The three leaks nearest the threshold: faint additive ones and a code at a random place
    (each follows at >= 0.87 after 5 epochs, >= 0.99 after the recipe's 15).
    """
    from leakbench.runs.pipeline import run_one
    from leakbench.types import RunConfig

    result = run_one(RunConfig(method="naive", leakage=spec, quiet=True, leaderboard_dir=tmp_path, epochs=5))
    assert result.metrics["leak_following"] >= 0.8, result.metrics
