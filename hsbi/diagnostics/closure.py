"""Closure: the reference sample reweighted by ``r(x, z)`` must reproduce the numerator sample.

Per feature, weighted histograms of the reweighted reference and of the numerator are compared
with ``chi2 = sum_bins (N - W)^2 / (N + sum w^2)`` after normalising ``W`` to ``N`` (the
normalisation ``sum w / N``, ideally 1, is reported separately with its statistical error
``sd(w) sqrt(m) / N`` for ``m`` reference events); ``ndf`` is the number of bins minus one.
Binning: equal-population bins of the numerator sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["closure_chi2", "closure_metrics", "plot_closure"]


def closure_chi2(
    numerator: np.ndarray, reference: np.ndarray, weights: np.ndarray, bins: int = 20,
    numerator_weights: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """One entry per feature (columns of ``numerator (n, F)`` and ``reference (m, F)``).

    ``numerator_weights``: event weights of a weighted numerator sample (MC), scaled to sum to
    ``n``; its bins then count ``sum w`` with variance ``sum w^2`` instead of Poisson ``N``."""
    out = []
    norm = float(weights.sum() / len(numerator))
    norm_error = float(weights.std() * np.sqrt(len(weights)) / len(numerator))
    scaled = weights / norm
    num_w = None if numerator_weights is None else numerator_weights * len(numerator) / numerator_weights.sum()
    for f in range(numerator.shape[1]):
        edges = np.quantile(numerator[:, f], np.linspace(0, 1, bins + 1))
        edges[0], edges[-1] = -np.inf, np.inf
        n, _ = np.histogram(numerator[:, f], edges, weights=num_w)
        n2 = n if num_w is None else np.histogram(numerator[:, f], edges, weights=num_w**2)[0]
        w, _ = np.histogram(reference[:, f], edges, weights=scaled)
        w2, _ = np.histogram(reference[:, f], edges, weights=scaled**2)
        chi2 = float(np.sum((n - w) ** 2 / np.maximum(n2 + w2, 1e-12)))
        out.append({"chi2": round(chi2, 3), "ndf": bins - 1, "normalisation": round(norm, 5),
                    "normalisation_error": round(norm_error, 5)})
    return out


def plot_closure(
    path: Path,
    numerator: Mapping[str, np.ndarray],
    reference: np.ndarray,
    weights: Mapping[str, np.ndarray],
    feature_names: Sequence[str],
    chi2: Mapping[str, Mapping[str, list[dict[str, float]]]],
    bins: int = 40,
) -> None:
    """Rows: processes; columns: features. Numerator vs reweighted reference (ensemble)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    procs = list(numerator)
    fig, axes = plt.subplots(len(procs), len(feature_names), figsize=(4.2 * len(feature_names), 3.2 * len(procs)),
                             squeeze=False)
    for r, proc in enumerate(procs):
        for f, name in enumerate(feature_names):
            ax = axes[r][f]
            edges = np.linspace(*np.quantile(numerator[proc][:, f], [0.001, 0.999]), bins + 1)
            ax.hist(numerator[proc][:, f], edges, histtype="step", color="black", label="numerator")
            w = weights[proc] * len(numerator[proc]) / weights[proc].sum()
            ax.hist(reference[:, f], edges, weights=w, histtype="step", color="tab:blue",
                    label="reference x r(x, z)")
            c = chi2["ensemble"][proc][f]
            ax.set_title(f"{proc}: {name}  chi2/ndf {c['chi2']:.1f}/{c['ndf']}", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def closure_metrics(
    numerator: Mapping[str, np.ndarray],
    reference: np.ndarray,
    weights: Mapping[str, np.ndarray],
    bins: int = 20,
) -> dict[str, float]:
    """Two closure scores of ratio estimates, averaged over processes and features (lower is better).

    Arguments:
        numerator: per process, its numerator sample ``(n_c, F)``.
        reference: the reference sample ``(m, F)``.
        weights: per process, ``r_c(x, z)`` of each reference event ``(m,)``.
        bins: equal-population bins of :func:`closure_chi2`.

    Returns ``closure_chi2_ndf``, the mean ``chi2 / ndf`` of :func:`closure_chi2`, and
    ``closure_wasserstein``, the mean 1-D Wasserstein distance between numerator and reweighted
    reference in units of the numerator's standard deviation of the feature.
    """
    from scipy.stats import wasserstein_distance

    chi2, distance = [], []
    for proc, x in numerator.items():
        w = weights[proc]
        chi2 += [c["chi2"] / c["ndf"] for c in closure_chi2(x, reference, w, bins)]
        distance += [
            wasserstein_distance(x[:, f], reference[:, f], v_weights=w) / max(float(x[:, f].std()), 1e-12)
            for f in range(x.shape[1])
        ]
    return {"closure_chi2_ndf": float(np.mean(chi2)), "closure_wasserstein": float(np.mean(distance))}
