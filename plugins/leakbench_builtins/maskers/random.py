"""The control masker: random scattered pixels, no learning and no knowledge of the leak.

A learned masker's gain only counts above what masking *anything* of the same size gives:
MET-style training with random masks already forces the classifier to read more than a
few pixels. Use it as ``--method met --masker random`` with the size of the learned run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from leakbench import Masker, hookimpl


@dataclass
class RandomMasker(Masker):
    """Random scattered pixels, a fresh mask per call (control: size_pct % of the image, or match_run's size)."""

    name: ClassVar[str] = "random"
    size_pct: float = 12.0
    match_run: str = ""  # a leaderboard run_id whose mask_size_pct to use instead of size_pct
    leaderboard_dir: str = "leaderboards"  # where match_run is looked up
    effective_pct: float = field(default=0.0, init=False)
    generator: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.size_pct <= 100.0:
            raise ValueError(f"size_pct must be between 0 and 100, got {self.size_pct}")
        if self.match_run and self.size_pct != type(self).size_pct:
            raise ValueError("give size_pct or match_run, not both")
        self.effective_pct = _matched_size(self.match_run, Path(self.leaderboard_dir)) if self.match_run \
            else self.size_pct

    def params(self) -> dict[str, Any]:
        """A matched control's identity is the size it resolved to and the run it matched, not
        the folder that run's row was read from: the same control found through another
        ``leaderboard_dir`` is the same experiment. Unmatched controls keep every option, so
        rows written before this rule keep their identity."""
        if not self.match_run:
            return super().params()
        return {"size_pct": self.effective_pct, "match_run": self.match_run}

    def build(self, classifier, image_size, recipe, device) -> None:
        import torch

        # Own stream, seeded from the run's global seed: the masks do not shift other random draws.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, images, features, leak_mask):
        import torch

        b, _, h, w = images.shape
        if self.generator is None or self.generator.device != images.device:
            self.generator = torch.Generator(device=images.device).manual_seed(int(torch.randint(0, 2**62, (1,))))
        draw = torch.rand(b, 1, h, w, device=images.device, generator=self.generator)
        return (draw < self.effective_pct / 100.0).to(images.dtype)


def _matched_size(run_id: str, directory: Path) -> float:
    """``mask_size_pct`` of ``run_id`` in the leaderboards under ``directory``."""
    import math

    from leakbench.results import leaderboard as lb
    frame = lb.read(lb.result_files(directory))
    rows = frame[frame["run_id"].astype(str) == run_id] if not frame.empty else frame
    if rows.empty:
        raise ValueError(f"no run '{run_id}' in the leaderboards under {directory}; set leaderboard_dir=...")
    size = float(rows.iloc[0]["mask_size_pct"])
    if math.isnan(size):
        raise ValueError(f"run '{run_id}' has no mask (its masker is 'none'); pick a run with a masker")
    return size


@hookimpl
def register_maskers():
    return [RandomMasker]
