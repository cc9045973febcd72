"""An outside multi-stage method, installed by a test exactly as a user would install theirs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from leakbench import Method, Stage, hookimpl


@dataclass
class TwoStage(Method):
    """Naive training, then a restart from the initial weights that draws last stage's mistakes twice as often."""

    name: ClassVar[str] = "two-stage"
    first_share: float = 0.5
    mistakes: Any = field(default=None, init=False, repr=False)

    def stages(self, epochs: int) -> list[Stage]:
        if epochs < 2:
            raise ValueError(f"needs at least 2 epochs, got {epochs}")
        first = max(1, round(self.first_share * epochs))
        return [Stage("first", first), Stage("second", epochs - first, self.restart)]

    def build(self, trainer: Any) -> None:
        import torch

        self.mistakes = torch.zeros((), device=trainer.ctx.device)

    def restart(self, trainer: Any) -> None:
        images, _ = trainer.training_images(spoiled=True)
        wrong = trainer.predict(images).argmax(1) != trainer.data.labels
        self.mistakes = wrong.sum().float()
        trainer.set_sample_weights(1.0 + wrong.float())
        trainer.reset_classifier()

    def train_step(self, ctx, x, y, leak_mask):
        import torch

        with ctx.autocast():
            logits = ctx.classifier(x)
            loss = ctx.loss(logits, y)
        ctx.step(loss)
        stage_no = torch.ones((), device=x.device) * (2.0 if ctx.stage == "second" else 1.0)
        return {"loss": loss.detach(), "correct": (logits.argmax(1) == y).sum(), "stage_no": stage_no,
                "mistakes": self.mistakes}

    def state_dict(self) -> dict[str, Any]:
        return {"mistakes": self.mistakes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mistakes = state["mistakes"]


@hookimpl
def register_methods():
    return [TwoStage]
