"""The CASME decoder's fast forward computes CASME's literal decoder, exactly in real arithmetic.

The registered masker is built on real classifiers (CIFAR stem at 16 and 32 px, the ImageNet
stem at 128 px, where the mask is upsampled to the image) and compared in float64 with the
architecture as written in kondiz/casme ``archs.Decoder``: concatenate l0 and the upsampled
laterals, 3x3 conv, sigmoid. Values and every parameter gradient must agree to rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leakbench.engine.backbone import create_classifier
from leakbench.engine.recipes import RECIPES
from leakbench.registry import Registry


def literal_casme(decoder, feats: list[torch.Tensor], image_size: int) -> torch.Tensor:
    base = feats[0]
    parts = [base] + [F.interpolate(lat(f), size=base.shape[-2:], mode="bilinear", align_corners=False)
                      for lat, f in zip(decoder.lateral, feats[1:], strict=True)]
    mask = torch.sigmoid(decoder.final(torch.cat(parts, dim=1)))
    if mask.shape[-1] != image_size:
        mask = F.interpolate(mask, size=(image_size, image_size), mode="nearest")
    return mask


@pytest.mark.parametrize(("image_size", "channels"), [(16, (8, 16, 32, 64)), (32, (16, 32, 64, 128)),
                                                      (128, (8, 16, 32, 64))])
def test_fast_decoder_equals_the_literal_casme_decoder(image_size, channels):
    torch.manual_seed(0)
    classifier = create_classifier("resnet18", 10, image_size, channels=channels).double()
    masker = Registry().create("maskers", "casme")
    masker.build(classifier, image_size, RECIPES["paper"], torch.device("cpu"))
    decoder = masker.decoder.double()
    decoder.final.bias.data.fill_(-1.0)  # a mask well inside (0, 1), so the sigmoid is not flat
    with torch.no_grad():
        _, feats = classifier(torch.randn(3, 3, image_size, image_size, dtype=torch.float64), features=True)
    feats = [f.detach() for f in feats]

    params = list(decoder.parameters())
    fast = masker(None, feats, None)
    fast_grads = torch.autograd.grad((fast * torch.linspace(0, 1, fast.numel(), dtype=fast.dtype)
                                      .view_as(fast)).sum(), params)
    reference = literal_casme(decoder, feats, image_size)
    ref_grads = torch.autograd.grad((reference * torch.linspace(0, 1, fast.numel(), dtype=fast.dtype)
                                     .view_as(fast)).sum(), params)

    assert fast.shape == reference.shape == (3, 1, image_size, image_size)
    assert torch.allclose(fast, reference, rtol=0, atol=1e-12)
    for got, want in zip(fast_grads, ref_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    # the state dict is CASME's: parameters and BN statistics only, nothing the fast path adds
    kept = {name for name, _ in decoder.named_parameters()} | {
        name for name, _ in decoder.named_buffers() if "running" in name or "num_batches" in name}
    assert set(decoder.state_dict()) == kept
