"""Plain training on the spoiled data: the baseline that learns the leak."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leakbench import Method, hookimpl


@dataclass
class Naive(Method):
    """Standard cross-entropy training on spoiled images (learns the leak, fails on clean)."""

    name: ClassVar[str] = "naive"

    def train_step(self, ctx, x, y, leak_mask):
        with ctx.autocast():
            logits = ctx.classifier(x)
            loss = ctx.loss(logits, y)
        ctx.step(loss)
        return {"loss": loss.detach(), "correct": (logits.argmax(1) == y).sum()}


@hookimpl
def register_methods():
    return [Naive]
