"""timm classifiers that also expose the intermediate features a masker decodes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from leakbench.errors import LeakbenchError, closest

SMALL_IMAGE = 64  # at or below this size, use the CIFAR stem (3x3 stride-1 conv, no max-pool)


class Classifier(nn.Module):
    """Wraps a timm model; ``forward(x, features=True)`` also returns its feature pyramid.

    One module with one ``forward`` so ``torch.compile`` and channels_last cover both the
    plain path (naive training, evaluation) and the feature path (maskers).
    """

    def __init__(self, model: nn.Module, name: str, config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.config = config  # what the leaderboard records about the architecture

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        if not features:
            return self.model(x)
        last, inter = self.model.forward_intermediates(x)
        return self.model.forward_head(last), inter

    def feature_channels(self) -> list[int]:
        return [int(info["num_chs"]) for info in self.model.feature_info]


def create_classifier(name: str, num_classes: int, image_size: int, **kwargs: Any) -> Classifier:
    """``timm.create_model`` from scratch, with the CIFAR stem for small images."""
    import timm

    if name not in timm.list_models():
        raise LeakbenchError(f"unknown backbone '{name}'{closest(name, timm.list_models())}; any timm model name works")
    kwargs = {"zero_init_last": False, **kwargs}  # as the reference recipe: no zero-init of residual BN
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError:  # models without zero_init_last / width options
        kwargs = {k: v for k, v in kwargs.items() if k != "zero_init_last"}
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    cifar_stem = image_size <= SMALL_IMAGE and isinstance(getattr(model, "conv1", None), nn.Conv2d)
    if cifar_stem:
        stem = model.conv1
        model.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        # forward_intermediates and the masker's upsampling read reductions from feature_info
        for info in model.feature_info:
            info["reduction"] = max(1, info["reduction"] // 4)
    if not hasattr(model, "forward_intermediates"):
        raise LeakbenchError(f"backbone '{name}' has no forward_intermediates in this timm version; pick a ResNet")
    config = {"cifar_stem": cifar_stem, "image_size": image_size, **{k: v for k, v in kwargs.items()}}
    return Classifier(model, name, config)


def describe(classifier: Classifier) -> str:
    """Short human description for leaderboard rows, e.g. ``resnet18 cifar-stem 16px channels=16``."""
    cfg = dict(classifier.config)
    parts = [classifier.name, "cifar-stem" if cfg.pop("cifar_stem") else "imagenet-stem", f"{cfg.pop('image_size')}px"]
    parts += [f"{k}={'/'.join(map(str, v)) if isinstance(v, (tuple, list)) else v}" for k, v in cfg.items()]
    return " ".join(parts)


def to_device(classifier: Classifier, device: torch.device) -> Classifier:
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return classifier.to(device=device, memory_format=fmt)
