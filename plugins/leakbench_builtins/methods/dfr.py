"""Deep Feature Reweighting (Kirichenko et al., ICLR 2023): naive training, then refit the last layer on clean data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from leakbench import Stage, hookimpl
from leakbench_builtins.methods.naive import Naive

# The official grid of inverse L1 strengths (dfr_evaluate_spurious.py).
C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


@dataclass
class DFR(Naive):
    """Deep Feature Reweighting: naive training, then the last layer refit on a few held-out clean images (L1 logistic).

    Did naive training learn usable features that the leak merely outvoted? After the naive run,
    the classifier's pre-logit features of a small class-balanced set of *clean* images are
    standardised and an L1-penalised multinomial logistic regression is fitted on them; its
    weights (folded back through the standardisation) replace the last layer. The clean images are
    the tune carve of the images the run trains on (``Trainer.held_out_clean``: scored on test,
    the tune split; scored on tune, a second carve, so never a scored image); their count is the
    row's ``clean_images``. The L1 strength is chosen from the official grid on a class-stratified
    half of that set (best worst-class accuracy on the other half), then refitted on all of it.

    Differences from the paper and its code (PolinaKirichenko/deep_feature_reweighting): the
    clean images are held out from the reported split but were also seen, spoiled, by the naive
    stage (the paper's held-out validation set is not in training); classes stand in for groups
    (clean images carry no leak); one multinomial fit (saga) instead of liblinear's one-vs-rest,
    which scikit-learn no longer offers for more than two classes, and no averaging over 20
    retrains, since the set is already balanced.
    """

    name: ClassVar[str] = "dfr"
    supervision: ClassVar[str] = "clean-data"
    per_class: int = 0  # clean images per class; 0: all of the held-out carve, balanced to its smallest class
    indices: Any = field(default=None, init=False, repr=False)  # the clean images used, [n] into the training set
    chosen_c: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.per_class < 0:
            raise ValueError(f"per_class must be >= 0 (0: every held-out clean image, balanced), got {self.per_class}")

    def stages(self, epochs: int) -> list[Stage]:
        return [Stage("train", epochs), Stage("last-layer", 0, self.refit)]

    def build(self, trainer: Any) -> None:
        import torch

        held = trainer.held_out_clean()
        labels = trainer.data.labels[held]
        counts = torch.bincount(labels, minlength=trainer.data.num_classes)
        if int(counts.min()) < 2:
            raise ValueError("needs at least 2 held-out clean images of every class for its last-layer fit")
        take = int(counts.min()) if self.per_class == 0 else self.per_class
        if take > int(counts.min()):
            raise ValueError(f"per_class={self.per_class}, but the held-out carve has only {int(counts.min())} images "
                             "of its smallest class")
        # the first `take` of each class, in the carve's fixed order: the same images for every seed
        rank = torch.zeros_like(labels)
        for c in range(trainer.data.num_classes):
            rank[labels == c] = torch.arange(int(counts[c]), device=labels.device)
        self.indices = held[rank < take]

    def clean_images(self, train_size: int) -> int | None:
        return None if self.indices is None else int(self.indices.numel())

    def refit(self, trainer: Any) -> None:
        """Features of the clean set, an L1 logistic regression chosen on halves, into the last layer."""
        import numpy as np
        import torch

        features = trainer.predict(trainer.data.images[self.indices], features=True).cpu().double().numpy()
        labels = trainer.data.labels[self.indices].cpu().numpy()
        order = np.argsort(labels, kind="stable")
        half = np.zeros(len(labels), dtype=bool)
        half[order[::2]] = True  # every other image of each class
        best = max(C_GRID, key=lambda c: _worst_class_accuracy(_fit(features[half], labels[half], c),
                                                               features[~half], labels[~half]))
        self.chosen_c = best
        model = _fit(features, labels, best)
        scaler, linear = model
        weight = linear.coef_ / scaler.scale_[None, :]
        bias = linear.intercept_ - weight @ scaler.mean_
        head = getattr(trainer.base_classifier(), "model", trainer.base_classifier()).get_classifier()
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
            head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"indices": self.indices}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"indices"} or not bool((state["indices"].cpu() == self.indices.cpu()).all()):
            raise ValueError("its clean set differs from this run's")


def _fit(features, labels, c: float):
    """Standardise, then L1 multinomial logistic regression with inverse strength ``c``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        linear = LogisticRegression(l1_ratio=1.0, C=c, solver="saga", max_iter=2000, random_state=0)
        linear.fit(scaler.transform(features), labels)
    return scaler, linear


def _worst_class_accuracy(model, features, labels) -> float:
    scaler, linear = model
    predicted = linear.predict(scaler.transform(features))
    return min(float((predicted[labels == c] == c).mean()) for c in set(labels.tolist()))


@hookimpl
def register_methods():
    return [DFR]
