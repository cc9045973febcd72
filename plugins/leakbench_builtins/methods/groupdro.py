"""Group DRO (Sagawa et al., ICLR 2020): minimise the worst group's loss, groups from the leak labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from leakbench import Method, hookimpl


@dataclass
class GroupDRO(Method):
    """Group DRO with online group weights; groups = (label, leak label or no leak); needs the leak labels.

    Every step computes each group's mean loss in the batch, raises the weights of the groups with
    high loss (``q_g <- q_g * exp(step_size * loss_g)``, renormalised) and trains on the weighted sum
    of group losses, as the official code (kohpangwei/group_DRO, ``loss.py``) does: groups absent
    from a batch count with loss 0. Only groups that occur in the training set get weight (a group
    with no image would only dilute the loss). With every image leaked truthfully there is one group
    per label and Group DRO is class-balanced naive training: no group contradicts the leak.

    Defaults: step size 0.01 and generalisation adjustment 0 (the paper's defaults). Differences:
    the paper pairs Group DRO with strong L2 or early stopping and a group-balanced sampler; ours
    uses the run's recipe like every method, and no balanced sampler, because with
    label x leak-label groups most wrong-leak groups hold one or two images and a balanced sampler
    would draw those almost exclusively.
    """

    name: ClassVar[str] = "groupdro"
    supervision: ClassVar[str] = "leak-label"
    step_size: float = 0.01  # eta: how fast group weights follow group losses
    adjustment: float = 0.0  # C: adds C / sqrt(group size) to each group's loss before the weight update
    weights: Any = field(default=None, init=False, repr=False)  # q over groups, on the device
    _bonus: Any = field(default=None, init=False, repr=False)
    _classes: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.step_size < 0:
            raise ValueError(f"step_size must be >= 0, got {self.step_size}")
        if self.adjustment < 0:
            raise ValueError(f"adjustment must be >= 0, got {self.adjustment}")

    def build(self, trainer: Any) -> None:
        import torch

        plan, labels = trainer.plan, trainer.data.labels
        if plan is None:
            raise ValueError("groupdro needs leaked training data (its groups are the leak labels)")
        self._classes = c = trainer.data.num_classes
        leak = plan.leak_labels if plan.has_leak is None else torch.where(plan.has_leak, plan.leak_labels, c)
        sizes = torch.bincount(labels * (c + 1) + leak, minlength=c * (c + 1)).float()
        present = sizes > 0
        self.weights = present.float() / present.sum()
        self._bonus = torch.where(present, self.adjustment / sizes.clamp(min=1).sqrt(), 0.0)

    def train_step(self, ctx, x, y, leak_mask):
        import torch
        import torch.nn.functional as F

        if ctx.leak_labels is None:
            raise ValueError("groupdro needs the leak labels of each batch (supervision leak-label)")
        c = self._classes
        groups = y * (c + 1) + torch.where(ctx.has_leak, ctx.leak_labels, c)
        with ctx.autocast():
            logits = ctx.classifier(x)
        per_image = F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=ctx.recipe.label_smoothing)
        sums = torch.zeros_like(self.weights).index_add(0, groups, per_image)
        counts = torch.zeros_like(self.weights).index_add(0, groups, torch.ones_like(per_image))
        group_loss = sums / counts.clamp(min=1)
        with torch.no_grad():
            weights = self.weights * torch.exp(self.step_size * (group_loss + self._bonus))
            self.weights = weights / weights.sum()
        robust = group_loss @ self.weights
        ctx.step(robust)
        return {"loss": per_image.mean().detach(), "correct": (logits.argmax(1) == y).sum(),
                "robust_loss": robust.detach(), "top_group_weight": self.weights.max()}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"weights"} or state["weights"].shape != self.weights.shape:
            raise ValueError("its group weights do not fit this run's groups")
        self.weights = state["weights"].to(self.weights.device)


@hookimpl
def register_methods():
    return [GroupDRO]
