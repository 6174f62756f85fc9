"""Plots of a declared-model fit: pulls and impact ranking, the POI scan, correlations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_belt", "plot_fit"]


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


def plot_belt(path: Path, belt: dict) -> None:
    """The declared model's Neyman belt: observed t(mu), the toys' critical values per level,
    the chi2_1 quantiles (Wilks) and the Neyman intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    grid = np.array(belt["grid"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(grid, belt["t_observed"], "ko-", ms=3, label=r"observed $t(\mu)$")
    for (level, crit), color in zip(belt["critical"].items(), ("tab:blue", "tab:orange", "tab:green")):
        ax.plot(grid, crit, "s--", color=color, ms=3, label=f"toys' {level}% quantile")
        ax.axhline(stats.chi2.ppf(float(level) / 100, 1), color=color, ls=":", lw=0.8)
        iv = belt["intervals"][level]
        if np.isfinite(iv["low"]):
            ax.axvspan(iv["low"], iv["high"], color=color, alpha=0.12)
    ax.set_xlabel(belt["poi"])
    ax.set_ylabel(r"$t = -2\Delta\ln L$")
    finite = [v for v in belt["t_observed"] if np.isfinite(v)]
    ax.set_ylim(0, max(6.0, min(max(finite, default=6.0), 12)))
    ax.set_title(f"Neyman belt, {belt['toys']} toys per point", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_binned(path: Path, spec: dict, edges: dict, summary: dict, unbinned_scan: dict) -> None:
    """``binned.png``: per channel the learned observable's nominal templates stacked with the
    observed data (ExportPyhf's pyhf workspace ``spec``), and the profile-likelihood ``t`` of
    the POI, binned (hsbi's binned fit) beside unbinned, with pyhf's intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = sorted(spec["channels"], key=lambda c: c["name"])
    fig, axes = plt.subplots(1, len(channels) + 1, figsize=(4.5 * (len(channels) + 1), 3.6))
    for ax, ch in zip(axes, channels):
        e = np.asarray(edges[ch["name"]], dtype=float)
        x = np.arange(len(e) - 1)  # equal-content bins: drawn by index
        bottom = np.zeros(len(x))
        for sample in ch["samples"]:
            ax.bar(x, sample["data"], bottom=bottom, width=1.0, alpha=0.7, label=sample["name"])
            bottom += np.asarray(sample["data"])
        obs = next(o["data"] for o in spec["observations"] if o["name"] == ch["name"])
        ax.errorbar(x, obs, yerr=np.sqrt(obs), fmt="ko", ms=3, label="data")
        ax.set_xlabel(f"bin of the learned log odds ({ch['name']})")
        ax.set_ylabel("events")
        ax.legend(fontsize=7)
    ax = axes[-1]
    poi = summary["poi"]
    ax.plot(unbinned_scan["values"], unbinned_scan["t"], "k-", label="unbinned")
    ax.plot(summary["scan"]["values"], summary["scan"]["t"], "b--", label=f"binned ({summary['bins']} bins)")
    for level, (lo, hi) in summary["pyhf"]["intervals"].items():
        ax.axvspan(lo, hi, alpha=0.1, color="b", label=f"pyhf {level}%")
    ax.axhline(1.0, ls=":", c="0.5")
    ax.set_ylim(0, max(5.0, 1.1 * float(np.max(summary["scan"]["t"]))) if summary["scan"]["t"] else 5.0)
    ax.set_xlabel(poi)
    ax.set_ylabel(rf"$t({poi})$")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
