"""CASME's learned masker, ported to pixel resolution for small images (met-spec.md §2.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from leakbench import Masker, hookimpl


@dataclass
class CasmeMasker(Masker):
    """Learned decoder over the classifier's detached features (CASME/MET), sigmoid mask."""

    name: ClassVar[str] = "casme"
    learned: ClassVar[bool] = True
    lambda_r: float = 10.0
    clip_norm: float = 10.0
    decoder: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.lambda_r < 0:
            raise ValueError(f"lambda_r must be >= 0, got {self.lambda_r}")
        if self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")

    def build(self, classifier, image_size, recipe, device) -> None:
        import torch

        self.decoder = _decoder(classifier.feature_channels(), image_size).to(device)
        if device.type == "cuda":
            self.decoder = self.decoder.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.decoder.parameters(), lr=recipe.masker_lr,
                                          weight_decay=recipe.masker_weight_decay)

    def modules(self):
        return {"decoder": self.decoder} if self.decoder is not None else {}

    def __call__(self, images, features, leak_mask):
        # Detached: the masker's loss must not train the shared encoder to make bad masks easy.
        # The decoder runs in fp32 whatever autocast is active (see Decoder.forward).
        return self.decoder([f.detach() for f in features])

    def objective(self, mask, logits_clean, logits_masked, labels):
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            correct_clean = (logits_clean.argmax(1) == labels).float()
            fooled = correct_clean * (logits_masked.argmax(1) != labels).float()  # "non-trivially confused"
        logp = F.log_softmax(logits_masked.float(), dim=1)
        neg_entropy = (logp.exp() * logp).sum(1)
        area = mask.mean(dim=(1, 2, 3))
        # both means over the whole batch, not the gated subset (CASME)
        return (neg_entropy * correct_clean).mean() - self.lambda_r * F.relu(fooled - area).mean()

    def gradients(self, loss):
        import torch

        return list(torch.autograd.grad(loss, list(self.decoder.parameters()), retain_graph=True))

    def apply_gradients(self, grads) -> None:
        import torch

        for param, grad in zip(self.decoder.parameters(), grads, strict=True):
            param.grad = grad
        torch.nn.utils.clip_grad_norm_(self.decoder.parameters(), self.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _decoder(channels: list[int], image_size: int):
    import math

    import torch
    import torch.nn.functional as F
    from torch import nn

    class Decoder(nn.Module):
        """l0 as is; l1..l4 through 1x1 conv-BN-ReLU to l0's width, upsampled to l0's size;
        concatenated; 3x3 conv to one channel; sigmoid; nearest-upsampled to the image if needed.

        That is the architecture and the parameters (``lateral``, ``final``: the state dict is
        CASME's). The forward computes the same function in a cheaper order; every step is a
        reassociation of linear maps, so it is exact in real arithmetic (float64 agrees with the
        literal concat form to ~1e-14; tests/test_casme_decoder.py checks it):
        - ``final`` over the concatenation is the sum over parts of ``final`` restricted to each
          part's channels (a conv is linear in its input channels), so nothing is concatenated;
        - a 3x3 conv is nine 1x1 convs, one per kernel offset, whose outputs are shifted and
          summed: each part is first mapped to 9 channels (one per offset) at its own size;
        - bilinear upsampling acts on each channel alone, so it commutes with that channel
          mixing: the coarse parts are upsampled as 9 channels, not ``width``, and as two fixed
          matrix products (rows, then columns), which is what bilinear interpolation with
          align_corners=False and the edge clamp is; the shifts and the sum run once, at the end.
        On a 2-core CPU at 32 px this cut the decoder's forward+backward about 3x at width 16
        and 4x at width 64 (see the note of issue 12); the full-resolution concat was the cost.
        """

        def __init__(self) -> None:
            super().__init__()
            width = channels[0]
            self.lateral = nn.ModuleList(
                nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
                for c in channels[1:]
            )
            self.final = nn.Conv2d(width * len(channels), 1, 3, padding=1, bias=True)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    k = module.kernel_size[0]
                    module.weight.data.normal_(0, math.sqrt(2.0 / (k * k * module.out_channels)))
                elif isinstance(module, nn.BatchNorm2d):
                    module.weight.data.fill_(1)
                    module.bias.data.zero_()
            # one-hot 3x3 kernels: channel k of the input is read at offset k (the shift-and-sum)
            self.register_buffer("shifts", torch.eye(9).view(9, 3, 3).unsqueeze(0), persistent=False)
            self._upsamplers: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

        def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
            # Always fp32, even inside the engine's bf16 autocast: a bf16 sigmoid rounds to exactly 1
            # from a logit of about 6.25 (fp32: 16.75), and such saturated cells get no gradient at all.
            # The decoder is tiny next to the classifier, so this costs next to nothing.
            with torch.autocast(device_type=feats[0].device.type, enabled=False):
                return self._mask([f if f.dtype == torch.float64 else f.float() for f in feats])

        def _mask(self, feats: list[torch.Tensor]) -> torch.Tensor:
            base = feats[0]
            size = base.shape[-2:]
            width = base.shape[1]
            # final.weight [1, parts*width, 3, 3] -> per part [9 offsets, width] as 1x1 kernels
            per_offset = self.final.weight[0].reshape(len(feats), width, 9).transpose(1, 2).unsqueeze(-1).unsqueeze(-1)
            parts = [base] + [lat(f) for lat, f in zip(self.lateral, feats[1:], strict=True)]
            total = None
            for part, kernel in zip(parts, per_offset.unbind(0), strict=True):
                offsets = F.conv2d(part, kernel)
                if offsets.shape[-2:] != size:
                    rows, cols = self._upsampler(offsets.shape[-2:], size, offsets)
                    offsets = rows @ offsets @ cols
                total = offsets if total is None else total + offsets
            mask = torch.sigmoid(F.conv2d(total, self.shifts.to(total.dtype), self.final.bias, padding=1))
            if mask.shape[-1] != image_size:
                mask = F.interpolate(mask, size=(image_size, image_size), mode="nearest")
            return mask

        def _upsampler(self, src: torch.Size, dst: torch.Size, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Bilinear (align_corners=False) upsampling from ``src`` to ``dst`` as ``rows @ x @ cols``."""
            key = (tuple(src), tuple(dst), like.dtype, like.device)
            if key not in self._upsamplers:
                self._upsamplers[key] = (_bilinear_matrix(src[0], dst[0]).to(like),
                                         _bilinear_matrix(src[1], dst[1]).to(like).t().contiguous())
            return self._upsamplers[key]

    return Decoder()


def _bilinear_matrix(size_in: int, size_out: int):
    """``[size_out, size_in]`` weights of 1-D linear interpolation as ``F.interpolate`` computes it
    with ``align_corners=False``: source coordinate ``(i + 0.5) * in / out - 0.5``, clamped at 0."""
    import torch

    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for i in range(size_out):
        src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        lo = min(int(src), size_in - 1)
        hi = min(lo + 1, size_in - 1)
        frac = src - lo
        matrix[i, lo] += 1 - frac
        matrix[i, hi] += frac
    return matrix


@hookimpl
def register_maskers():
    return [CasmeMasker]
