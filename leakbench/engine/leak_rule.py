"""The leak-mask rule, checked on a probe batch before any training.

Masked pixels become the dataset mean, so the classifier sees *where* a mask is. If a
leakage returned a mask shaped like its label (a glyph's ink, a dot whose column is the
label), the oracle masker would write the label back into every masked image and the
leak metrics would measure nonsense, silently. The rule (``Leakage.apply``): the mask
marks the region where the leak *may* be written for that image; for the same images and
the same random state it is the same whatever the leak label; changed pixels lie inside
it. ``check_leakage`` holds any plugin, built-in or outside, to it, with one clear line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakbench.errors import LeakbenchError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from leakbench.types import Leakage

RULE = ("the leak mask must mark the region where the leak may be written, the same for every leak label "
        "(see leakbench.types.Leakage.apply)")


def check_leakage(leakage: Leakage, images: Tensor, num_classes: int, seed: int = 0) -> None:
    """Apply ``leakage`` to ``images`` once per probe labelling, from one random state.

    Raises LeakbenchError naming the plugin and the rule if the mask changes with the leak
    label, is not a bool ``[B,1,H,W]`` tensor, or if a pixel outside it changed.
    """
    import torch

    b = images.shape[0]
    base = torch.arange(b, device=images.device) % max(num_classes, 1)
    labellings = [base, (base + 1) % num_classes, torch.full_like(base, num_classes - 1)] if num_classes > 1 \
        else [base]
    generator = torch.Generator(device=images.device).manual_seed(seed)
    state = generator.get_state()
    masks = []
    for labels in labellings:
        generator.set_state(state)
        out, mask = leakage.apply(images.clone(), labels, generator)
        _check_shapes(leakage, images, out, mask)
        changed = (out != images).any(dim=1, keepdim=True)
        if (changed & ~mask).any():
            _fail(leakage, "it changed pixels outside its mask")
        masks.append(mask)
    if any(not torch.equal(masks[0], other) for other in masks[1:]):
        _fail(leakage, "its mask changes with the leak label, so masking would write the label into the image")


def _check_shapes(leakage: Leakage, images: Tensor, out: Tensor, mask: torch.Tensor) -> None:
    import torch

    if not isinstance(out, torch.Tensor) or out.shape != images.shape or out.dtype != torch.uint8:
        _fail(leakage, f"apply must return uint8 images of shape {tuple(images.shape)}")
    want = (images.shape[0], 1, *images.shape[-2:])
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != want:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        _fail(leakage, f"its mask must be a bool tensor of shape {want}, got {got}")


def _fail(leakage: Leakage, what: str) -> None:
    raise LeakbenchError(f"leakage '{leakage.name}' breaks the leak-mask rule: {what}; {RULE}")
