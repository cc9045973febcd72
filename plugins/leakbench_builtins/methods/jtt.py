"""Just Train Twice (Liu et al., ICML 2021): train, collect the training errors, train again upweighting them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from leakbench import Stage, hookimpl
from leakbench_builtins.methods.naive import Naive


@dataclass
class JTT(Naive):
    """Just Train Twice: naive for T epochs, then from scratch with its training errors upsampled lambda_up times.

    Stage ``identify`` (T = ``t_share`` of the run's epochs, at least 1) is naive training; at its
    end every training image, spoiled as planned and unaugmented, is classified by that model in
    eval mode and the misclassified ones form the error set. Stage ``upweighted`` resets the
    classifier to its initial weights and trains the rest of the epochs drawing error-set images
    ``lambda_up`` times as often as the others. Supervision: none (the error set stands in for the
    group labels). Where images never contradict the leak (strength 1, reliability 1) the naive
    model makes no training errors and JTT is naive training again: that is the regime's finding.

    Differences from the paper and its code (anniesch/jtt):
    - T is a share of our run (0.2: the paper's Waterbirds ratio, 60 of 300 epochs) and the two
      stages split the run's epochs, so JTT gets the same number of passes as every other method
      (the paper trains the final model for a full run after T epochs).
    - lambda_up = 6 is the paper's value for MultiNLI and CivilComments; its image datasets used 50
      (CelebA) and 100 (Waterbirds) with ImageNet-pretrained ResNet-50s at tiny learning rates.
    - Upsampling is weighted sampling with replacement, an epoch staying N images; the official
      code repeats the error set in the dataset, so its epochs grow.
    - "From scratch" is the run's initial weights again (the official code restarts from the same
      pretrained weights); each stage has its own learning-rate schedule and fresh momentum.
    """

    name: ClassVar[str] = "jtt"
    t_share: float = 0.2  # share of the run's epochs spent on the identification model (T)
    lambda_up: float = 6.0  # how many times as often an error-set image is drawn
    errors: Any = field(default=None, init=False, repr=False)  # bool [N]: the error set, once identified

    def __post_init__(self) -> None:
        if not 0.0 < self.t_share < 1.0:
            raise ValueError(f"t_share must be between 0 and 1 (a share of the run's epochs), got {self.t_share}")
        if self.lambda_up < 1.0:
            raise ValueError(f"lambda_up must be at least 1, got {self.lambda_up}")

    def stages(self, epochs: int) -> list[Stage]:
        if epochs < 2:
            raise ValueError(f"needs at least 2 epochs (identification, then the upweighted run), got {epochs}")
        t = min(epochs - 1, max(1, round(self.t_share * epochs)))
        return [Stage("identify", t), Stage("upweighted", epochs - t, self.upweight)]

    def build(self, trainer: Any) -> None:
        import torch

        self.errors = torch.zeros(len(trainer.data), dtype=torch.bool, device=trainer.ctx.device)

    def upweight(self, trainer: Any) -> None:
        """The identification model's training errors, then a fresh classifier that sees them more."""
        images, _ = trainer.training_images(spoiled=True)
        self.errors = trainer.predict(images).argmax(1) != trainer.data.labels
        trainer.set_sample_weights(1.0 + (self.lambda_up - 1.0) * self.errors.float())
        trainer.reset_classifier()

    def train_step(self, ctx, x, y, leak_mask):
        stats = super().train_step(ctx, x, y, leak_mask)
        if ctx.stage == "upweighted":  # its size, in each epoch's log line
            stats["error_set"] = self.errors.sum().float()
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"errors": self.errors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"errors"} or state["errors"].shape != self.errors.shape:
            raise ValueError("its error set does not fit this run's training set")
        self.errors = state["errors"].to(self.errors.device)


@hookimpl
def register_methods():
    return [JTT]
