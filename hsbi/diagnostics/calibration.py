"""Calibration of classifier outputs: reliability curves with binomial errors, the expected
calibration error (ECE) with its expectation for a perfectly calibrated classifier, and a PNG.

For predicted probabilities ``p_i`` and labels ``y_i`` in equal-width bins of ``p``:
``observed_b = mean(y)``, ``predicted_b = mean(p)`` and ``ECE = sum_b (n_b / n) |observed_b -
predicted_b|``. If the classifier is calibrated, ``observed_b - predicted_b`` has mean 0 and
variance ``sigma_b^2 = sum_{i in b} p_i (1 - p_i) / n_b^2`` (binomial), so ECE is not zero but has
expectation ``sum_b (n_b / n) sigma_b sqrt(2 / pi)`` and standard deviation
``sqrt(sum_b (n_b / n)^2 sigma_b^2 (1 - 2 / pi))`` (normal approximation per bin).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["expected_calibration_error", "plot_reliability", "reliability_curve"]


def reliability_curve(prob: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Per non-empty bin of ``prob (n,)``: ``predicted``, ``observed`` (fraction of ``y (n,)`` = 1),
    ``error`` (binomial ``sigma_b`` expected under calibration) and ``count``."""
    idx = np.clip((np.asarray(prob) * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(float)
    used = count > 0
    n = count[used]
    predicted = np.bincount(idx, weights=prob, minlength=bins)[used] / n
    observed = np.bincount(idx, weights=y, minlength=bins)[used] / n
    var = np.bincount(idx, weights=prob * (1 - prob), minlength=bins)[used] / n**2
    return {
        "predicted": predicted.tolist(),
        "observed": observed.tolist(),
        "error": np.sqrt(var).tolist(),
        "count": n.tolist(),
    }


def expected_calibration_error(prob: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, float]:
    """``ece`` of ``prob (n,)`` against ``y (n,)``, and ``ece_null`` and ``ece_null_sd``: its mean
    and standard deviation for a perfectly calibrated classifier with the same predictions."""
    curve = reliability_curve(prob, y, bins)
    frac = np.asarray(curve["count"]) / len(prob)
    sigma = np.asarray(curve["error"])
    gap = np.abs(np.asarray(curve["observed"]) - np.asarray(curve["predicted"]))
    return {
        "ece": float(np.sum(frac * gap)),
        "ece_null": float(np.sum(frac * sigma) * np.sqrt(2 / np.pi)),
        "ece_null_sd": float(np.sqrt(np.sum((frac * sigma) ** 2) * (1 - 2 / np.pi))),
    }


def plot_reliability(path: Path, curves: Mapping[str, Mapping[str, Mapping[str, list[float]]]]) -> None:
    """One panel per process (``curves[process][label]`` from :func:`reliability_curve`): observed
    against predicted with binomial error bars, and the diagonal of perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.4 * len(curves), 4.2), squeeze=False)
    for ax, (proc, by_label) in zip(axes[0], curves.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for label, c in by_label.items():
            member = label.startswith("member")
            ax.errorbar(c["predicted"], c["observed"], yerr=c["error"], marker="" if member else "o", ms=3,
                        lw=0.7 if member else 1.4, alpha=0.6 if member else 1.0, label=label)
        ax.set(title=proc, xlabel="classifier output f", ylabel="fraction of numerator events",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
