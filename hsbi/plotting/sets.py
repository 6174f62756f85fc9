"""Plots (PNG) of set estimators: posteriors (set, exact, per-event product), SBC rank
histograms and expected coverage, set-level profile scans and interval comparisons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import binom, chi2  # noqa: E402

__all__ = ["plot_intervals", "plot_posterior_report", "plot_posteriors", "plot_sbc", "plot_set_profiles",
           "plot_streaming"]

_STYLE = {"set": ("tab:blue", "-"), "exact": ("black", "--"), "per_event": ("tab:orange", ":")}


def _style(name: str) -> tuple[str | None, str]:
    return _STYLE.get(name, (None, "-"))


def plot_posteriors(path: Path, grid: np.ndarray, densities: Mapping[str, np.ndarray],
                    truths: Sequence[float], label: str = "f", title: str = "") -> None:
    """One panel per set (rows of each ``densities[name]``, ``(S, F)``), truth marked."""
    n = len(truths)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        for name, dens in densities.items():
            color, ls = _style(name)
            ax.plot(grid, dens[i], ls, color=color, label=name)
        ax.axvline(truths[i], color="red", lw=0.8)
        ax.set_xlabel(label)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sbc(path: Path, ranks: np.ndarray, n_samples: int, coverage: Mapping[str, Mapping],
             bins: int = 20, title: str = "") -> None:
    """Rank histogram with the 99% band of a uniform histogram, and expected coverage."""
    fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    edges = np.linspace(0, n_samples + 1, bins + 1)  # whole ranks per bin: unequal probabilities
    p = np.histogram(np.arange(n_samples + 1), edges)[0] / (n_samples + 1)
    counts = np.histogram(ranks, edges)[0]
    lo, hi = binom.ppf(0.005, len(ranks), p), binom.ppf(0.995, len(ranks), p)
    ax_l.bar(np.arange(bins), hi - lo, bottom=lo, width=1.0, color="grey", alpha=0.3,
             label="99% band (uniform ranks)")
    ax_l.bar(np.arange(bins), counts, width=1.0, fill=False, edgecolor="tab:blue")
    ax_l.set_xlabel(f"rank bin ({bins} bins of {n_samples + 1} ranks)")
    ax_l.set_ylabel("sets")
    ax_l.legend(fontsize=8)
    levels = sorted(float(k) for k in coverage)
    vals = [coverage[f"{cl:g}"]["value"] for cl in levels]
    errs = [coverage[f"{cl:g}"]["error"] for cl in levels]
    nominal = [coverage[f"{cl:g}"].get("nominal", cl) for cl in levels]
    ax_r.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax_r.plot(levels, nominal, "k_", ms=12, label=f"calibrated ({n_samples} draws)")
    ax_r.errorbar(levels, vals, yerr=2 * np.asarray(errs), fmt="o", label="empirical +- 2 s.e.")
    ax_r.set_xlabel("credible level")
    ax_r.set_ylabel("coverage")
    ax_r.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_set_profiles(path: Path, scans: Mapping[str, tuple[np.ndarray, np.ndarray]], truth: float,
                      levels: Sequence[float], label: str = "mu", title: str = "") -> None:
    """``t(poi)`` per likelihood with the Wilks thresholds."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, (poi, t) in scans.items():
        color, ls = _style(name)
        ax.plot(poi, t, ls, color=color, label=name)
    for cl in levels:
        ax.axhline(chi2.ppf(cl, 1), color="grey", lw=0.8, ls=":")
    ax.axvline(truth, color="red", lw=0.8, label="truth")
    ax.set_ylim(0, 2.5 * chi2.ppf(max(levels), 1))
    ax.set_xlabel(label)
    ax.set_ylabel("t")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_intervals(path: Path, intervals: Mapping[str, np.ndarray], truth: float | np.ndarray,
                   label: str = "mu", title: str = "") -> None:
    """Left: intervals ``(S, 2)`` per method for each set. Right: widths of every method
    against the first method's (same sets)."""
    names = list(intervals)
    n = len(next(iter(intervals.values())))
    fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(12, 4.2))
    truths = np.broadcast_to(np.asarray(truth, dtype=float), (n,))
    for j, name in enumerate(names):
        color, _ = _style(name)
        y = np.arange(n) + (j - (len(names) - 1) / 2) * 0.25
        ax_l.hlines(y, intervals[name][:, 0], intervals[name][:, 1], color=color, label=name)
    ax_l.plot(truths, np.arange(n), "r|", ms=8, label="truth")
    ax_l.set_xlabel(label)
    ax_l.set_ylabel("set")
    ax_l.legend(fontsize=8)
    ref = np.diff(intervals[names[0]], axis=1)[:, 0]
    for name in names[1:]:
        color, _ = _style(name)
        ax_r.scatter(ref, np.diff(intervals[name], axis=1)[:, 0], s=10, color=color, label=name)
    top = max(float(np.diff(v, axis=1).max()) for v in intervals.values())
    ax_r.plot([0, top], [0, top], "k--", lw=0.8)
    ax_r.set_xlabel(f"width ({names[0]})")
    ax_r.set_ylabel("width")
    ax_r.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_streaming(path: Path, grid: np.ndarray, steps: np.ndarray, once: np.ndarray,
                   truth: float | None = None, label: str = "f") -> None:
    """Posterior after each streaming update (log densities ``(steps, F)``) and all at once."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    cmap = plt.get_cmap("viridis")
    for k, logp in enumerate(steps):
        ax.plot(grid, np.exp(logp), color=cmap(k / max(len(steps) - 1, 1)), lw=1,
                label="after update 1" if k == 0 else (f"after update {len(steps)}" if k == len(steps) - 1 else None))
    ax.plot(grid, np.exp(once), "k--", lw=1.2, label="all events at once")
    if truth is not None:
        ax.axvline(truth, color="red", lw=0.8)
    ax.set_xlabel(label)
    ax.set_ylabel("posterior density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_posterior_report(out: Path, result: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
    """InferPosterior's figures in ``out``: posterior.png (observed set, every method),
    intervals.png (set-level vs per-event intervals on the comparison sets), streaming.png (if
    streamed) and sbc.png."""
    grid = arrays["grid"]
    dens = {k[len("observed_"):]: arrays[k][None] for k in arrays if k.startswith("observed_")}
    label = result["poi"]
    plot_posteriors(out / "posterior.png", grid, dens, [result["truth"][0]], label,
                    f"observed set ({result['observed_events']} events)")
    intervals = {k[len("intervals_"):]: arrays[k] for k in arrays if k.startswith("intervals_")}
    if intervals:
        plot_intervals(out / "intervals.png", intervals, arrays["comparison_truth"], label,
                       f"central {result['levels'][0]:g} credible intervals, same sets")
    if "stream_steps" in arrays:
        plot_streaming(out / "streaming.png", grid, arrays["stream_steps"], arrays["stream_once"],
                       result["truth"][0], label)
    sbc = result["sbc"]
    plot_sbc(out / "sbc.png", arrays["ranks"], sbc["samples"], sbc["expected_coverage"],
             title=f"SBC: {sbc['sets']} sets, {sbc['samples']} draws each")
