"""Metrics of a finished run, on clean, spoiled and leak-flipped validation images."""

from __future__ import annotations

import torch

from leakbench.augment import Normalizer
from leakbench.backbone import Classifier
from leakbench.types import ImageSet, Leakage, Masker

METRICS = (
    "acc_clean",            # % correct on original validation images (the paper's "Unmasked")
    "acc_clean_masked",     # % correct on the same images masked by the run's masker ("Masked")
    "acc_spoiled",          # % correct on validation images carrying the true label's leak
    "leak_following",       # share of predictions equal to a wrong leak label (obeys the leak)
    "mask_size_pct",        # mean mask value x 100 on spoiled validation images (paper Table 2)
    "mask_size_clean_pct",  # the same on clean validation images
    "leak_mask_share",      # share of the mask's mass on leak pixels (spoiled images)
    "leak_coverage",        # mean mask value over the leak pixels (spoiled images)
)


@torch.no_grad()
def evaluate(
    classifier: Classifier,
    masker: Masker,
    leakage: Leakage,
    data: ImageSet,
    normalize: Normalizer,
    batch_size: int,
    seed: int,
    autocast=None,
) -> dict[str, float | None]:
    """All of METRICS; mask metrics are None when the masker produces no mask."""
    import contextlib

    autocast = autocast or contextlib.nullcontext
    dev = data.images.device
    classifier.eval()
    for module in masker.modules().values():
        module.eval()
    gen = torch.Generator(device=dev).manual_seed(seed + 1_000_003)
    n, k = len(data), data.num_classes
    wrong = (data.labels + torch.randint(1, max(2, k), (n,), device=dev, generator=gen)) % k

    sums = {name: torch.zeros((), device=dev, dtype=torch.float64) for name in
            ("clean", "clean_masked", "spoiled", "following", "mask", "mask_clean", "on_leak", "leak_px")}
    has_mask = True
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        images, y = data.images[sl], data.labels[sl]
        spoiled, leak_mask = leakage.apply(images, y, gen)
        flipped, _ = leakage.apply(images, wrong[sl], gen)
        with autocast():
            # clean: the leak mask marks where a leak would be, so an oracle masks that spot
            x = normalize(images)
            logits, feats = classifier(x, features=True)
            sums["clean"] += (logits.argmax(1) == y).sum()
            m = masker(x, feats, leak_mask)
            if m is None:
                has_mask = False
            else:
                sums["clean_masked"] += (classifier(Masker.apply(x, m)).argmax(1) == y).sum()
                sums["mask_clean"] += m.float().mean(dim=(1, 2, 3)).sum()
            xs = normalize(spoiled)
            logits, feats = classifier(xs, features=True)
            sums["spoiled"] += (logits.argmax(1) == y).sum()
            if has_mask:
                m = masker(xs, feats, leak_mask).float()
                sums["mask"] += m.mean(dim=(1, 2, 3)).sum()
                sums["on_leak"] += (m * leak_mask).sum()
                sums["leak_px"] += leak_mask.sum()
            sums["following"] += (classifier(normalize(flipped)).argmax(1) == wrong[sl]).sum()

    v = {name: t.item() for name, t in sums.items()}  # one sync
    out: dict[str, float | None] = {
        "acc_clean": 100 * v["clean"] / n,
        "acc_spoiled": 100 * v["spoiled"] / n,
        "leak_following": v["following"] / n,
        "acc_clean_masked": None, "mask_size_pct": None, "mask_size_clean_pct": None,
        "leak_mask_share": None, "leak_coverage": None,
    }
    if has_mask:
        mask_mass = v["mask"] / n  # mean mask per image; total mass = that x pixels
        pixels = data.images.shape[-1] * data.images.shape[-2]
        out.update(
            acc_clean_masked=100 * v["clean_masked"] / n,
            mask_size_pct=100 * mask_mass,
            mask_size_clean_pct=100 * v["mask_clean"] / n,
            leak_mask_share=v["on_leak"] / max(mask_mass * n * pixels, 1e-12),
            leak_coverage=v["on_leak"] / max(v["leak_px"], 1.0),
        )
    return out
