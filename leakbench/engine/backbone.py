"""timm classifiers that also expose the intermediate features a masker decodes."""

from __future__ import annotations

from dataclasses import dataclass, field
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


# Keywords the runner sets itself; a user passing them would silently fight the runner.
_RESERVED = ("pretrained", "num_classes", "in_chans", "device", "dtype")
_TIMM_DEFAULT_WIDTH = 64


@dataclass(frozen=True)
class BackboneSpec:
    """``--backbone NAME:key=value,...`` resolved: a timm model name and typed keywords.

    ``width`` is ours: ResNet stage widths ``width x 1/2/4/8`` (timm's ``channels``), for
    the narrow ResNets that CPU runs need. Every other key is a ``timm.create_model``
    keyword of that model (``drop_rate=0.1``), checked against its constructor before any
    data is loaded.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """Keywords for ``timm.create_model``."""
        out = {k: v for k, v in self.options.items() if k != "width"}
        if "width" in self.options:
            out["channels"] = tuple(self.options["width"] * 2**i for i in range(4))
        return out

    def identity(self) -> dict[str, Any]:
        """For the experiment's identity: ``resnet18:width=64`` is plain ``resnet18``."""
        options = dict(self.options)
        if options.get("width") == _TIMM_DEFAULT_WIDTH:
            options.pop("width")
        return {"name": self.name, **options}

    def text(self) -> str:
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in self.options.items()) if self.options else "")


def resolve_backbone(spec: str) -> BackboneSpec:
    """Parse and check a backbone spec: the name and every option, each as one clear line."""
    import inspect

    import timm

    from leakbench.registry import parse_spec

    name, raw = parse_spec(spec)
    if name not in timm.list_models():
        raise LeakbenchError(f"unknown backbone '{name}'{closest(name, timm.list_models())}; any timm model name works")
    with torch.device("meta"):  # no memory, no weights: only to learn the model's constructor
        cls = type(timm.create_model(name, pretrained=False, num_classes=2))
    params = inspect.signature(cls.__init__).parameters
    accepted = {k: p for k, p in params.items() if k not in ("self", *_RESERVED)
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if "channels" in accepted:
        accepted = {"width": inspect.Parameter("width", inspect.Parameter.KEYWORD_ONLY, default=64), **accepted}
    options: dict[str, Any] = {}
    for key, text in raw.items():
        if key not in accepted:
            raise LeakbenchError(f"backbone '{name}' has no option '{key}'{closest(key, accepted)}; "
                                 f"options of timm's {cls.__name__}: {', '.join(sorted(accepted))}")
        options[key] = _typed(text, accepted[key].default, f"backbone '{name}' option '{key}'")
    if options.get("width", 1) < 1:
        raise LeakbenchError(f"backbone '{name}' option 'width' must be a positive integer, got {raw['width']}")
    return BackboneSpec(name, options)


def _typed(text: str, default: Any, what: str) -> Any:
    """A value typed like the keyword's default (bool, int, float: as plugin options are), else
    a Python literal or the text itself."""
    import ast

    from leakbench.types import _coerce

    if isinstance(default, (bool, int, float)):
        return _coerce(text, type(default), what)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
