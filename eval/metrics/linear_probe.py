"""Linear probe (CLIP_benchmark protocol): logistic regression on frozen features.

The inverse regularisation strength C is chosen on a held-out part of train,
the probe is refitted on all of train with it, and scored on test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .registry import register_metric

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # log-spaced, as CLIP_benchmark's search range


@dataclass
class ProbeFit:
    accuracy: float  # on test, with C refitted on all of train
    val_accuracy: float  # on the held-out part of train, at the chosen C
    C: float


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    Cs: tuple[float, ...] = C_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
) -> ProbeFit:
    """Fit standardised logistic regression on (N, D) features; C picked on a held-out `val_fraction` of train."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    def fit(C: float, x: np.ndarray, y: np.ndarray):
        # one BLAS thread: L-BFGS makes many tiny BLAS calls, and threads spinning on a busy machine make it 50x slower
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)  # weak regularisation on separable data: expected
            return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter)).fit(x, y)

    if len(np.unique(y_train)) < 2:
        raise ValueError(f"a probe needs at least two classes in train, got {np.unique(y_train).tolist()}")
    try:
        xa, xv, ya, yv = train_test_split(x_train, y_train, test_size=val_fraction, random_state=seed, stratify=y_train)
    except ValueError:  # a class too rare to stratify
        xa, xv, ya, yv = train_test_split(x_train, y_train, test_size=val_fraction, random_state=seed)
    val = {C: float(fit(C, xa, ya).score(xv, yv)) if len(np.unique(ya)) > 1 else 0.0 for C in Cs}
    best = max(Cs, key=lambda C: (val[C], -abs(np.log10(C))))  # ties: the C closest to 1
    return ProbeFit(float(fit(best, x_train, y_train).score(x_test, y_test)), val[best], best)


@dataclass
class ProbeSweep:
    """Probe accuracies of one target over layers, for the trained model and the controls."""

    target: str
    trained: dict[int, ProbeFit]  # layer -> fit
    random: dict[int, ProbeFit] = field(default_factory=dict)  # same shape, random weights
    pixels: ProbeFit | None = None  # raw pixels
    chance: float = 0.0  # share of the most frequent test class

    @staticmethod
    def best(fits: dict[int, ProbeFit]) -> tuple[int, ProbeFit]:
        """The layer with the best held-out accuracy (never chosen on test)."""
        layer = max(fits, key=lambda k: (fits[k].val_accuracy, k))
        return layer, fits[layer]


def _per_target(sweeps: list[ProbeSweep], pick) -> float | dict[str, float]:
    vals = {s.target: pick(s) for s in sweeps}
    return next(iter(vals.values())) if len(vals) == 1 else {"": float(np.mean(list(vals.values()))), **vals}


@register_metric("probe_accuracy", aggregation="corpus", higher_is_better=True, inputs="probe")
def probe_accuracy(sweeps: list[ProbeSweep]) -> float | dict[str, float]:
    """Test accuracy of the linear probe at the layer with the best held-out accuracy."""
    return _per_target(sweeps, lambda s: ProbeSweep.best(s.trained)[1].accuracy)


@register_metric("random_probe_accuracy", aggregation="corpus", higher_is_better=True, inputs="probe")
def random_probe_accuracy(sweeps: list[ProbeSweep]) -> float | dict[str, float]:
    """Control: the same probe on a randomly initialised model of the same shape."""
    return _per_target(sweeps, lambda s: ProbeSweep.best(s.random)[1].accuracy if s.random else float("nan"))


@register_metric("pixel_probe_accuracy", aggregation="corpus", higher_is_better=True, inputs="probe")
def pixel_probe_accuracy(sweeps: list[ProbeSweep]) -> float | dict[str, float]:
    """Control: the same probe on raw pixels."""
    return _per_target(sweeps, lambda s: s.pixels.accuracy if s.pixels else float("nan"))
