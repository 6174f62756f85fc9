"""Profile-likelihood scans and the Neyman belt (critical values against the observed t)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import chi2  # noqa: E402

__all__ = ["plot_belt", "plot_profile_and_belt", "plot_test_statistic"]

_COLORS = {"lre": "tab:blue", "exact": "black"}


def plot_profile_and_belt(
    path: Path,
    scan_mu: np.ndarray,
    scans: Mapping[str, np.ndarray],
    grid: np.ndarray,
    critical: Mapping[str, Mapping[str, np.ndarray]],
    truth: float,
    title: str = "",
    poi_label: str = "signal fraction",
) -> None:
    """Left: t(mu) per estimator with Wilks thresholds. Right: observed t(mu) against the
    Neyman critical values per grid point (the belt); accepted where t <= c."""
    fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, t in scans.items():
        style = "--" if name == "exact" else "-"
        ax_l.plot(scan_mu, t, style, color=_COLORS.get(name), label=f"{name} profile")
        ax_r.plot(scan_mu, t, style, color=_COLORS.get(name), lw=1, label=f"observed t ({name})")
    levels = sorted({float(cl) for crit in critical.values() for cl in crit})
    for cl in levels:
        q = chi2.ppf(cl, 1)
        ax_l.axhline(q, color="grey", lw=0.8, ls=":")
        ax_l.text(scan_mu[0], q, f" {100 * cl:.1f}% (Wilks)", va="bottom", fontsize=8, color="grey")
    for (name, crit), marker in zip(critical.items(), ("o", "s", "^")):
        for (cl, values), ls in zip(crit.items(), ("-", "--", ":")):
            ax_r.plot(grid, values, marker=marker, ms=3, ls=ls, lw=0.8, color=_COLORS.get(name),
                      alpha=0.7, label=f"critical value {100 * float(cl):.1f}% ({name})")
            ax_r.axhline(chi2.ppf(float(cl), 1), color="grey", lw=0.6, ls=":")
            t_obs = scans.get(name)
            if t_obs is not None:
                inside = (scan_mu >= grid[0]) & (scan_mu <= grid[-1])
                accepted = inside & (t_obs <= np.interp(scan_mu, grid, values))
                ax_r.fill_between(scan_mu, 0, 0.35 if ls == "-" else 0.7, where=accepted,
                                  color=_COLORS.get(name), alpha=0.15, step="mid", lw=0,
                                  label=f"Neyman {100 * float(cl):.1f}% interval ({name})")
    for ax in (ax_l, ax_r):
        ax.axvline(truth, color="tab:red", lw=0.8, label="truth")
        ax.set_xlabel(rf"$\mu$ ({poi_label})")
        ax.set_ylabel(r"$t_\mu = -2\ln\lambda(\mu)$")
        ax.set_ylim(0, max(8.0, 1.3 * chi2.ppf(max(levels), 1)))
    ax_r.set_xlim(grid[0], grid[-1])
    ax_l.set_title("profile likelihood scan")
    ax_r.set_title("Neyman construction (accepted where t <= c)")
    ax_l.legend(fontsize=8, loc="upper right")
    ax_r.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_belt(
    path: Path,
    belt: Mapping,
    observed: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    title: str = "",
    poi_label: str = "signal fraction",
) -> None:
    """The confidence belt: critical value ``c(mu)`` per density and level with its
    order-statistic band, the chi2(1) quantiles (Wilks), and the observed ``t(mu)`` curves.

    ``belt``: as written by ``ConfidenceBelt`` (``grid``, ``levels``, ``densities.<name>.points``);
    ``observed``: per density ``(mu (S,), t (S,))``.
    """
    fig, ax = plt.subplots(figsize=(10, 4.6))
    grid = np.asarray(belt["grid"])
    for (name, entry), marker in zip(belt["densities"].items(), ("o", "s", "^")):
        color = _COLORS.get(name)
        n_toys = sorted({row["toys"] - row["failed_fits"] for row in entry["points"]})
        used = f"{n_toys[0]}" if len(n_toys) == 1 else f"{n_toys[0]}-{n_toys[-1]}"
        for cl, ls in zip(belt["levels"], ("-", "--", ":")):
            rows = [row[f"{cl:g}"] for row in entry["points"]]
            ax.fill_between(grid, [r["low"] for r in rows], [r["high"] for r in rows], color=color,
                            alpha=0.15, lw=0)
            ax.plot(grid, [r["value"] for r in rows], marker=marker, ms=3, ls=ls, lw=0.9, color=color,
                    label=f"c(mu) {100 * cl:.1f}% ({name}, {used} good toys/point)")
        if observed and name in observed:
            mu, t = observed[name]
            ax.plot(mu, t, color=color, lw=1.6, alpha=0.8, label=f"observed t ({name})")
    for cl in belt["levels"]:
        q = chi2.ppf(cl, 1)
        ax.axhline(q, color="grey", lw=0.8, ls=":")
        ax.text(grid[0], q, f" chi2(1) {100 * cl:.1f}%", va="bottom", fontsize=8, color="grey")
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylim(0, max(8.0, 1.3 * chi2.ppf(max(belt["levels"]), 1)))
    ax.set_xlabel(rf"$\mu$ ({poi_label})")
    ax.set_ylabel(r"$t_\mu$ and critical value $c(\mu)$")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title or f"confidence belt ({belt['method']} toys, accepted where t <= c)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_test_statistic(
    path: Path, t_values: Mapping[str, np.ndarray], coverage: Mapping[str, Mapping], title: str = ""
) -> None:
    """Distribution of ``t_mu`` at the truth against chi2(1), with the coverage per level."""
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    upper = max(10.0, max(float(np.nanquantile(t, 0.995)) for t in t_values.values()))
    bins = np.linspace(0, upper, 41)
    for name, t in t_values.items():
        t = t[np.isfinite(t)]
        ax.hist(t, bins=bins, density=True, histtype="step", lw=1.4, color=_COLORS.get(name),
                label=f"{name} ({len(t)} datasets)")
    grid = np.linspace(bins[1] / 4, upper, 400)
    ax.plot(grid, chi2.pdf(grid, 1), color="grey", ls="--", label=r"$\chi^2_1$")
    lines = []
    for name, entry in coverage.items():
        for level, c in entry.items():
            if isinstance(c, Mapping) and "asymptotic" in c:
                a, n = c["asymptotic"], c["neyman"]
                lines.append(f"{name} {level}%: Wilks {a['value']:.3f}±{a['error']:.3f}, "
                             f"Neyman {n['value']:.3f}±{n['error']:.3f}")
    ax.text(0.98, 0.75, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel(r"$t_\mu$ at the true $\mu$")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title or "test statistic at the truth and coverage", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
