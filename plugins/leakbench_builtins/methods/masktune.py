"""MaskTune (Asgari et al., NeurIPS 2022): mask what the trained model looks at, fine-tune on the masked images."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

from leakbench import Masker, Stage, hookimpl
from leakbench_builtins.methods.naive import Naive


@dataclass
class MaskTune(Naive):
    """MaskTune: naive training, then one epoch of fine-tuning with the trained model's xGradCAM hot spots masked.

    Stage ``erm`` is naive training. At its end the model is frozen; in stage ``finetune`` each
    batch is first explained by the frozen model: xGradCAM on its last convolutional stage for the
    predicted class, upsampled bilinearly to the image and min-max scaled, and the pixels above
    mean + ``std_factor`` x std of the positive saliency are masked (to the dataset mean, as every
    masker here does), then the classifier, continuing from the ERM weights, trains on the masked
    batch. MET's closest relative: both hide what the model relies on, MaskTune once, afterwards.

    Differences from the official code (aliasgharkhani/Masktune): the saliency is computed on the
    view being trained on (after crop, flip and the leak), not once per stored image, because our
    leak is written after augmentation (a stored mask would miss a moved leak); the two stages split
    the run's epochs (ERM gets all but the fine-tuning epoch) and the fine-tuning epoch runs the
    recipe's schedule afresh, where the official code fine-tunes at the ERM run's last learning rate
    (ours decays to 0 under the cosine digits recipe); masked pixels become the dataset mean, not
    black; masks come from the last ERM model, not the one best on validation.
    """

    name: ClassVar[str] = "masktune"
    std_factor: float = 2.0  # mask where saliency > mean + std_factor x std (of the positive saliency)
    finetune_epochs: int = 1
    frozen: Any = field(default=None, init=False, repr=False)  # the ERM model the masks come from

    def __post_init__(self) -> None:
        if self.std_factor < 0:
            raise ValueError(f"std_factor must be >= 0, got {self.std_factor}")
        if self.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be at least 1, got {self.finetune_epochs}")

    def stages(self, epochs: int) -> list[Stage]:
        if epochs <= self.finetune_epochs:
            raise ValueError(f"needs more than finetune_epochs={self.finetune_epochs} epochs (ERM first), got {epochs}")
        return [Stage("erm", epochs - self.finetune_epochs), Stage("finetune", self.finetune_epochs, self.freeze)]

    def build(self, trainer: Any) -> None:
        self.frozen = copy.deepcopy(trainer.base_classifier()).requires_grad_(False)

    def modules(self) -> dict[str, Any]:
        return {"frozen": self.frozen} if self.frozen is not None else {}

    def freeze(self, trainer: Any) -> None:
        self.frozen.load_state_dict(trainer.base_classifier().state_dict())

    def train_step(self, ctx, x, y, leak_mask):
        if ctx.stage != "finetune":
            return super().train_step(ctx, x, y, leak_mask)
        self.frozen.eval()
        mask = saliency_mask(self.frozen, x, self.std_factor, ctx.autocast)
        stats = super().train_step(ctx, Masker.apply(x, mask), y, leak_mask)
        return {**stats, "mask_pct": mask.mean() * 100}


def xgradcam(classifier: Any, x: Any, autocast: Any) -> Any:
    """xGradCAM (Fu et al. 2020) of the predicted class on the last convolutional stage, ``[B,1,h,w]``,
    ReLU'd: channel weights sum(grad * activation) / sum(activation)."""
    import torch

    net = getattr(classifier, "model", classifier)
    with torch.enable_grad():
        with autocast():
            acts = net.forward_features(x)
        acts = acts.detach().float().requires_grad_(True)
        logits = net.forward_head(acts)
        score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        (grads,) = torch.autograd.grad(score, acts)
    weights = (grads * acts).sum((2, 3), keepdim=True) / (acts.sum((2, 3), keepdim=True) + 1e-7)
    return (weights * acts).sum(1, keepdim=True).clamp(min=0)


def saliency_mask(classifier: Any, x: Any, std_factor: float, autocast: Any) -> Any:
    """1 where the min-max scaled, image-sized xGradCAM exceeds mean + std_factor x std of its positive
    values (the official threshold), per image; float ``[B,1,H,W]``; no host sync."""
    import torch.nn.functional as F

    cam = F.interpolate(xgradcam(classifier, x, autocast), size=x.shape[-2:], mode="bilinear", align_corners=False)
    low = cam.amin((2, 3), keepdim=True)
    cam = (cam - low) / (cam.amax((2, 3), keepdim=True) - low + 1e-7)
    positive = (cam > 0).float()
    count = positive.sum((2, 3), keepdim=True).clamp(min=1)
    mean = (cam * positive).sum((2, 3), keepdim=True) / count
    std = (((cam - mean) ** 2) * positive).sum((2, 3), keepdim=True).div(count).sqrt()
    return (cam > mean + std_factor * std).float()


@hookimpl
def register_methods():
    return [MaskTune]
