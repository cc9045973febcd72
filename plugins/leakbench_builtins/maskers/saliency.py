"""A masker with no network of its own: the classifier's own input-gradient saliency.

If hiding what the current classifier looks at is enough, a learned decoder is not needed;
this is the baseline a learned masker has to beat at the same mask size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from leakbench import Masker, hookimpl


@dataclass
class SaliencyMasker(Masker):
    """Top top_pct % pixels of |d logit(predicted) / d input| of the current classifier; nothing learned."""

    name: ClassVar[str] = "saliency"
    top_pct: float = 5.0
    classifier: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.top_pct <= 100.0:
            raise ValueError(f"top_pct must be in (0, 100], got {self.top_pct}")

    def build(self, classifier, image_size, recipe, device) -> None:
        self.classifier = classifier  # the live model: masks follow it as it trains

    def __call__(self, images, features, leak_mask):
        import torch

        if self.classifier is None:
            raise ValueError("the saliency masker needs build(classifier, ...) before use")
        model = self.classifier
        was_training = model.training
        model.eval()  # no BN statistics updates from this extra forward; deterministic masks
        try:
            # evaluation calls maskers under no_grad; and fp32 even inside the engine's bf16 autocast,
            # whose coarser input gradients moved 11-18% of the top-k pixels (untrained 16-32 px ResNet)
            with torch.enable_grad(), torch.autocast(device_type=images.device.type, enabled=False):
                x = images.detach().float().requires_grad_(True)
                # the predicted class's logit (Simonyan et al. 2014): unlike its log-probability, its
                # gradient does not vanish once the classifier is sure (p -> 1)
                logits = model(x).float()
                picked = logits.gather(1, logits.argmax(1, keepdim=True)).sum()  # predicted labels, not true ones
                (grad,) = torch.autograd.grad(picked, x)
        finally:
            model.train(was_training)
        score = grad.abs().amax(dim=1, keepdim=True).flatten(1)  # [B, H*W], strongest channel per pixel
        k = max(1, round(self.top_pct / 100.0 * score.shape[1]))
        top = score.topk(k, dim=1).indices
        mask = torch.zeros_like(score).scatter_(1, top, 1.0)
        return mask.view(images.shape[0], 1, *images.shape[-2:]).to(images.dtype)


@hookimpl
def register_maskers():
    return [SaliencyMasker]
