"""Learning from Failure (Nam et al., NeurIPS 2020): a biased model shows which images the shortcut fails on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from leakbench import Method, hookimpl


@dataclass
class LfF(Method):
    """Learning from Failure: a biased model (generalised CE) and the classifier weighted by relative difficulty.

    Two networks of the run's architecture train side by side on the same batches. The biased one
    minimises generalised cross-entropy (``q``), which amplifies its reliance on whatever is easy
    (the leak); the classifier (the one evaluated) weights each image's cross-entropy by
    ``L_b / (L_b + L_d)``, where ``L_b`` and ``L_d`` are per-image exponential moving averages
    (``ema``) of both models' losses, each divided by its class's largest. Images the biased model
    fails on, those that contradict the leak, weigh most. Supervision: none. With every leak
    truthful nothing contradicts it, and LfF cannot help: that is the regime's finding.

    Defaults are the paper's (q = 0.7, EMA 0.7). Differences from the official code (alinlab/LfF):
    both networks use the run's recipe (SGD and its schedule; the code uses Adam, lr 1e-3), and the
    per-class maximum is taken on the device over the whole EMA buffer, as the code does on the host.
    """

    name: ClassVar[str] = "lff"
    q: float = 0.7  # generalised cross-entropy exponent of the biased model
    ema: float = 0.7  # weight of the past in the per-image loss averages
    biased: Any = field(default=None, init=False, repr=False)
    optimizer: Any = field(default=None, init=False, repr=False)
    buffers: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.q <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {self.q}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")

    def build(self, trainer: Any) -> None:
        import torch

        self.biased = trainer.new_classifier()
        self.optimizer = trainer.make_optimizer(self.biased.parameters())
        n, device = len(trainer.data), trainer.ctx.device
        self.buffers = {"loss_biased": torch.zeros(n, device=device), "loss_debiased": torch.zeros(n, device=device),
                        "seen": torch.zeros(n, dtype=torch.bool, device=device)}
        self._labels = trainer.data.labels
        self._classes = trainer.data.num_classes

    def modules(self) -> dict[str, Any]:
        return {"biased": self.biased} if self.biased is not None else {}

    def optimizers(self) -> list[Any]:
        return [self.optimizer] if self.optimizer is not None else []

    def train_step(self, ctx, x, y, leak_mask):
        import torch
        import torch.nn.functional as F

        idx, b = ctx.index, self.buffers
        with ctx.autocast():
            logits_b = self.biased(x)
            logits_d = ctx.classifier(x)
        ce_b = F.cross_entropy(logits_b.float(), y, reduction="none")
        ce_d = F.cross_entropy(logits_d.float(), y, reduction="none", label_smoothing=ctx.recipe.label_smoothing)
        with torch.no_grad():
            past = torch.where(b["seen"][idx], self.ema, 0.0)  # a first visit takes the loss as it is
            b["loss_biased"][idx] = past * b["loss_biased"][idx] + (1 - past) * ce_b
            b["loss_debiased"][idx] = past * b["loss_debiased"][idx] + (1 - past) * ce_d
            b["seen"][idx] = True
            relative = []
            for key in ("loss_biased", "loss_debiased"):
                top = torch.zeros(self._classes, device=x.device).scatter_reduce(0, self._labels, b[key], "amax")
                relative.append(b[key][idx] / top[y].clamp(min=1e-8))
            weight = relative[0] / (relative[0] + relative[1] + 1e-8)
        loss_d = (ce_d * weight).mean()
        ctx.step(loss_d)
        p_true = F.softmax(logits_b.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        gce = (ce_b * p_true.detach() ** self.q * self.q).mean()  # the official GCE: its gradient is q * p^q * dCE
        self.optimizer.zero_grad(set_to_none=True)
        gce.backward(inputs=list(self.biased.parameters()))
        self.optimizer.step()
        return {"loss": ce_d.mean().detach(), "correct": (logits_d.argmax(1) == y).sum(),
                "loss_biased": ce_b.mean().detach(), "mean_weight": weight.mean()}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.buffers)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.buffers) or any(state[k].shape != v.shape for k, v in self.buffers.items()):
            raise ValueError("its per-image loss averages do not fit this run's training set")
        self.buffers = {k: state[k].to(v.device) for k, v in self.buffers.items()}


@hookimpl
def register_methods():
    return [LfF]
