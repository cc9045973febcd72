"""Mask-Enhanced Training (met-spec.md §2.3): CASME with only the latest classifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Masker, Method, hookimpl


@dataclass
class MET(Method):
    """Mask-Enhanced Training: classifier steps on spoiled then masked images, masker learns to hide."""

    name: ClassVar[str] = "met"
    default_masker: ClassVar[str] = "casme"
    uses_masker: ClassVar[bool] = True

    def train_step(self, ctx, x, y, leak_mask):
        masker = ctx.masker
        # A) one forward serves the classifier step and the masker's features
        with ctx.autocast():
            logits, feats = ctx.classifier(x, features=True)
            loss = ctx.loss(logits, y)
        ctx.step(loss)
        # B) the latest classifier (train mode) on masked images
        with ctx.autocast():
            mask = masker(x, feats, leak_mask)
            logits_masked = ctx.classifier(Masker.apply(x, mask))
            loss_masked = ctx.loss(logits_masked, y)
        grads = None
        if masker.learned:  # masker gradient before step B changes the weights in this graph
            grads = masker.gradients(masker.objective(mask, logits.detach(), logits_masked, y))
        ctx.step(loss_masked)
        if grads is not None:
            masker.apply_gradients(grads)
        return {"loss": loss.detach(), "correct": (logits.argmax(1) == y).sum()}


@hookimpl
def register_methods():
    return [MET]
