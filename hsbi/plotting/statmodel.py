"""Plots of a declared-model fit: pulls and impact ranking, the POI scan, correlations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_fit"]


def plot_fit(out: Path, result: dict) -> None:
    """``pulls.png`` (ranked impacts beside pulls and constraints), ``scan.png`` and
    ``correlation.png`` from :func:`hsbi.inference.declared.analyse`'s summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _pulls(plt, out / "pulls.png", result)
    _scan(plt, out / "scan.png", result)
    _correlation(plt, out / "correlation.png", result)


def _pulls(plt, path: Path, result: dict) -> None:
    imps = result["impacts"][:30][::-1]
    n = max(len(imps), 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, sharey=True, figsize=(9, 1.5 + 0.3 * n))
    y = np.arange(len(imps))
    ax1.errorbar([i["pull"] for i in imps], y, xerr=[i["constraint"] for i in imps], fmt="ko", ms=3)
    ax1.axvspan(-1, 1, color="0.9")
    ax1.set_xlabel(r"pull $(\hat\alpha - a) / \sigma$")
    ax1.set_yticks(y, [i["name"] for i in imps])
    for key, color, alpha in (("prefit", "tab:blue", 0.3), ("postfit", "tab:blue", 0.9)):
        up = [i[key][0] for i in imps]
        down = [i[key][1] for i in imps]
        ax2.barh(y, up, color=color, alpha=alpha, label=f"{key} +1")
        ax2.barh(y, down, color="tab:red", alpha=alpha, label=f"{key} -1")
    ax2.axvline(0, color="k", lw=0.5)
    ax2.set_xlabel(rf"$\Delta\hat{{{result['poi']}}}$")
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scan(plt, path: Path, result: dict) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(result["scan"]["values"], result["scan"]["t"], "k-")
    for level, (lo, hi) in result["intervals"]["minos"].items():
        ax.axvspan(lo, hi, alpha=0.15, label=f"MINOS {level}%")
    ax.axhline(1.0, ls=":", c="0.5")
    ax.axhline(3.84, ls=":", c="0.5")
    ax.set_xlabel(result["poi"])
    ax.set_ylabel(r"$t = -2\Delta\ln L$")
    ax.set_ylim(0, max(5.0, min(max(result["scan"]["t"]), 10)))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _correlation(plt, path: Path, result: dict) -> None:
    if result["correlation"] is None:
        return
    corr, names = np.array(result["correlation"]), result["parameters"]
    fig, ax = plt.subplots(figsize=(2 + 0.3 * len(names), 1.5 + 0.3 * len(names)))
    im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
