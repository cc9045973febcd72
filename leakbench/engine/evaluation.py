"""Metrics of a finished run, on clean, spoiled and leak-flipped validation images."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields

import torch

from leakbench.engine.augment import Normalizer
from leakbench.engine.backbone import Classifier
from leakbench.types import ImageSet, Leakage, Masker

METRICS = (
    "acc_clean",            # % correct on original validation images (the paper's "Unmasked")
    "acc_clean_masked",     # % correct on the same clean images masked by the run's masker (the paper's "Masked")
    "acc_spoiled",          # % correct on validation images carrying the true label's leak
    "acc_spoiled_masked",   # % correct on those spoiled images masked by the run's masker
    "leak_following",       # share of predictions equal to a wrong leak label (obeys the leak)
    "mask_size_pct",        # mean mask value x 100 on spoiled validation images (paper Table 2)
    "mask_size_clean_pct",  # the same on clean validation images
    "leak_mask_share",      # share of the mask's mass on leak pixels (spoiled images)
    "leak_coverage",        # mean mask value over the leak pixels (spoiled images)
)


EVAL_SEED = 0x5EED  # fixed: the evaluation leaks belong to the dataset and split, not to a run


@dataclass
class EvalSet:
    """A scored split with its leaks written once: clean, spoiled (true label's leak) and
    flipped (a wrong label's leak) images, the wrong labels and the leak mask.

    Built on the CPU with a generator seeded by the split's name alone, so every seed and
    every device scores the same images (random placements and wrong labels included) and
    the spread over seeds is training noise only.
    """

    split: str
    images: torch.Tensor
    labels: torch.Tensor
    spoiled: torch.Tensor
    flipped: torch.Tensor
    wrong: torch.Tensor
    leak_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> EvalSet:
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "split"}
        return EvalSet(self.split, **moved)


def build_eval_set(data: ImageSet, leakage: Leakage, split: str, batch_size: int = 1000) -> EvalSet:
    """Write the evaluation leaks into ``data`` (already ``prepare``d leakage), on the CPU."""
    gen = torch.Generator().manual_seed(EVAL_SEED + zlib.crc32(split.encode()))
    images, labels = data.images.cpu(), data.labels.cpu()
    n, k = len(labels), data.num_classes
    wrong = (labels + torch.randint(1, max(2, k), (n,), generator=gen)) % k
    spoiled, flipped, masks = [], [], []
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        out, mask = leakage.apply(images[sl], labels[sl], gen)
        spoiled.append(out)
        masks.append(mask)
        flipped.append(leakage.apply(images[sl], wrong[sl], gen)[0])
    return EvalSet(split, images, labels, torch.cat(spoiled), torch.cat(flipped), wrong, torch.cat(masks))


@torch.no_grad()
def evaluate(
    classifier: Classifier,
    masker: Masker,
    data: EvalSet,
    normalize: Normalizer,
    batch_size: int,
    autocast=None,
) -> dict[str, float | None]:
    """All of METRICS; mask metrics are None when the masker produces no mask."""
    import contextlib

    autocast = autocast or contextlib.nullcontext
    dev = data.images.device
    classifier.eval()
    for module in masker.modules().values():
        module.eval()
    n = len(data)
    sums = {name: torch.zeros((), device=dev, dtype=torch.float64) for name in
            ("clean", "clean_masked", "spoiled", "spoiled_masked", "following", "mask", "mask_clean", "on_leak",
             "leak_px")}
    has_mask = True
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        y, leak_mask = data.labels[sl], data.leak_mask[sl]
        with autocast():
            # clean: the leak mask marks where a leak would be, so an oracle masks that spot
            x = normalize(data.images[sl])
            logits, feats = classifier(x, features=True)
            sums["clean"] += (logits.argmax(1) == y).sum()
            m = masker(x, feats, leak_mask)
            if m is None:
                has_mask = False
            else:
                sums["clean_masked"] += (classifier(Masker.apply(x, m)).argmax(1) == y).sum()
                sums["mask_clean"] += m.float().mean(dim=(1, 2, 3)).sum()
            xs = normalize(data.spoiled[sl])
            logits, feats = classifier(xs, features=True)
            sums["spoiled"] += (logits.argmax(1) == y).sum()
            if has_mask:
                m = masker(xs, feats, leak_mask).float()
                sums["spoiled_masked"] += (classifier(Masker.apply(xs, m)).argmax(1) == y).sum()
                sums["mask"] += m.mean(dim=(1, 2, 3)).sum()
                sums["on_leak"] += (m * leak_mask).sum()
                sums["leak_px"] += leak_mask.sum()
            sums["following"] += (classifier(normalize(data.flipped[sl])).argmax(1) == data.wrong[sl]).sum()

    v = {name: t.item() for name, t in sums.items()}  # one sync
    out: dict[str, float | None] = {
        "acc_clean": 100 * v["clean"] / n,
        "acc_spoiled": 100 * v["spoiled"] / n,
        "leak_following": v["following"] / n,
        "acc_clean_masked": None, "acc_spoiled_masked": None, "mask_size_pct": None, "mask_size_clean_pct": None,
        "leak_mask_share": None, "leak_coverage": None,
    }
    if has_mask:
        mask_mass = v["mask"] / n  # mean mask per image; total mass = that x pixels
        pixels = data.images.shape[-1] * data.images.shape[-2]
        out.update(
            acc_clean_masked=100 * v["clean_masked"] / n,
            acc_spoiled_masked=100 * v["spoiled_masked"] / n,
            mask_size_pct=100 * mask_mass,
            mask_size_clean_pct=100 * v["mask_clean"] / n,
            leak_mask_share=v["on_leak"] / max(mask_mass * n * pixels, 1e-12),
            leak_coverage=v["on_leak"] / max(v["leak_px"], 1.0),
        )
    return out
