"""The case-study report: feature distributions under a nuisance, coverage table and plot,
and the Markdown page that ties the study's plots and numbers together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["coverage_rows", "coverage_table", "plot_coverage", "plot_features", "write_report"]

_KIND_COLORS = {"lre": "tab:blue", "dle": "tab:orange", "exact": "black"}


def plot_features(path: Path, features: Mapping[str, Mapping[float, tuple[np.ndarray, np.ndarray]]],
                  labels: Sequence[str], nuisance_label: str = "alpha") -> None:
    """One panel per feature: weighted densities per process (``features[process][value] =
    (x (n, D), weights (n,))``) at each nuisance value, with ratios to the middle value below."""
    n_feat = len(labels)
    fig, axes = plt.subplots(2, n_feat, figsize=(6 * n_feat, 6), height_ratios=[3, 1], sharex="col")
    styles = {0: ":", 1: "-", 2: "--"}
    for j, label in enumerate(labels):
        every = np.concatenate([x[:, j] for per in features.values() for x, _ in per.values()])
        edges = np.linspace(*np.quantile(every, [0.002, 0.998]), 46)
        for proc, color in zip(features, ("tab:red", "tab:blue", "tab:green")):
            values = sorted(features[proc])
            hists = {v: np.histogram(features[proc][v][0][:, j], edges, weights=features[proc][v][1],
                                     density=True)[0] for v in values}
            mid = hists[values[len(values) // 2]]
            for k, v in enumerate(values):
                axes[0, j].stairs(hists[v], edges, color=color, ls=styles.get(k, "-"),
                                  label=f"{proc}, {nuisance_label} = {v:g}")
                with np.errstate(divide="ignore", invalid="ignore"):
                    axes[1, j].stairs(np.where(mid > 0, hists[v] / mid, np.nan), edges, color=color,
                                      ls=styles.get(k, "-"))
        axes[0, j].set_ylabel("density")
        axes[1, j].set_ylabel(f"ratio to {nuisance_label} = {values[len(values) // 2]:g}")
        axes[1, j].set_ylim(0.5, 1.5)
        axes[1, j].axhline(1, color="grey", lw=0.7)
        axes[1, j].set_xlabel(label)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def coverage_rows(studies: Mapping[str, Sequence[Mapping]], levels: Sequence[str] = ("68", "95")) -> list[dict]:
    """Flat rows (kind, mu, nuisance, level, Wilks and Neyman coverage with errors, mean width)
    from ``CoverageStudy`` summaries per estimator kind."""
    rows = []
    for kind, summaries in studies.items():
        for s in summaries:
            entry = s[kind]
            for level in levels:
                cov = entry[level]
                rows.append({
                    "kind": kind, "mu": s["truth"]["mu"], "nuisance": s["truth"]["nuisance"], "level": level,
                    "wilks": cov["asymptotic"]["value"], "wilks_error": cov["asymptotic"]["error"],
                    "neyman": cov["neyman"]["value"], "neyman_error": cov["neyman"]["error"],
                    "width_68": entry.get("mean_width", {}).get("68"),
                    "failed_fits": entry["failed_fits"], "datasets": s["datasets"],
                })
    return rows


def _pull(value: float, error: float, nominal: float) -> str:
    return f"{value:.3f} ± {error:.3f}" + (" ⚠" if abs(value - nominal) > 2 * max(error, 1e-9) else "")


def coverage_table(rows: Sequence[Mapping], kinds: Sequence[str]) -> str:
    """Markdown: one line per (mu, nuisance), per kind the Wilks and Neyman coverage at 68.3% and
    95% (binomial errors; ⚠ beyond 2 errors from nominal) and the mean 68% width."""
    nominal = {"68": 0.6827, "95": 0.95}
    points = sorted({(r["mu"], r["nuisance"]) for r in rows})
    head = "| mu | alpha | " + " | ".join(
        f"{k.upper()} Wilks 68% | {k.upper()} Neyman 68% | {k.upper()} Wilks 95% | {k.upper()} Neyman 95% | "
        f"{k.upper()} width 68%" for k in kinds) + " |"
    lines = [head, "|" + "---|" * (2 + 5 * len(kinds))]
    for mu, a in points:
        cells = [f"{mu:g}", f"{a:g}"]
        for k in kinds:
            by_level = {r["level"]: r for r in rows if r["kind"] == k and (r["mu"], r["nuisance"]) == (mu, a)}
            for level in ("68", "95"):
                r = by_level[level]
                cells += [_pull(r["wilks"], r["wilks_error"], nominal[level]),
                          _pull(r["neyman"], r["neyman_error"], nominal[level])]
            width = by_level["68"]["width_68"]
            cells.append("-" if width is None else f"{width:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_coverage(path: Path, rows: Sequence[Mapping], kinds: Sequence[str]) -> None:
    """Coverage per (mu, nuisance) point with binomial error bars, one panel per level."""
    points = sorted({(r["mu"], r["nuisance"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, (level, nominal) in zip(axes, (("68", 0.6827), ("95", 0.95))):
        err = np.sqrt(nominal * (1 - nominal) / max(r["datasets"] for r in rows))
        ax.axhspan(nominal - 2 * err, nominal + 2 * err, color="grey", alpha=0.2, label="nominal ± 2 binomial errors")
        ax.axhline(nominal, color="grey", lw=0.8)
        for i, kind in enumerate(kinds):
            for j, (method, marker) in enumerate((("neyman", "o"), ("wilks", "s"))):
                sel = [next(r for r in rows if r["kind"] == kind and r["level"] == level and (r["mu"], r["nuisance"]) == p)
                       for p in points]
                x = np.arange(len(points)) + 0.12 * (2 * i + j) - 0.18
                ax.errorbar(x, [r[method] for r in sel], [r[f"{method}_error"] for r in sel], fmt=marker,
                            color=_KIND_COLORS.get(kind), mfc="none" if method == "wilks" else None, ms=4,
                            label=f"{kind.upper()} {'Neyman' if method == 'neyman' else 'Wilks'}")
        ax.set_xticks(range(len(points)), [f"mu={m:g}\nalpha={a:g}" for m, a in points], fontsize=7)
        ax.set_ylabel(f"coverage of the {level}% interval")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> None:
    """A Markdown page from ``(heading, body)`` sections."""
    text = [f"# {title}", ""]
    for heading, body in sections:
        text += [f"## {heading}", "", body.rstrip(), ""]
    path.write_text("\n".join(text))
