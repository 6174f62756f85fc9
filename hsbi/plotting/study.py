"""The case-study report: feature distributions under a nuisance, coverage table and plot,
and the Markdown page that ties the study's plots and numbers together."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["coverage_rows", "coverage_table", "plot_coverage", "plot_features", "shift_table", "write_report"]

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
            pool = entry.get("pool_expectation") or {}
            for level in levels:
                cov = entry[level]
                rows.append({
                    "pool_mu_hat": pool.get("mu_hat"), "shift": pool.get("shift_sigma"),
                    "spread_ratio": pool.get("spread_ratio"),
                    "wilks_predicted": (pool.get("wilks_predicted") or {}).get(level),
                    "kind": kind, "mu": s["truth"]["mu"], "nuisance": s["truth"]["nuisance"], "level": level,
                    "wilks": cov["asymptotic"]["value"], "wilks_error": cov["asymptotic"]["error"],
                    "neyman": cov["neyman"]["value"], "neyman_error": cov["neyman"]["error"],
                    "width_68": entry.get("mean_width", {}).get("68"),
                    "failed_fits": entry["failed_fits"], "datasets": s["datasets"],
                })
    return rows


def _pull(value: float, error: float, nominal: float) -> str:
    return f"{value:.3f} ± {error:.3f}" + (" ⚠" if abs(value - nominal) > 2 * max(error, 1e-9) else "")


def _point_table(rows: Sequence[Mapping], kinds: Sequence[str], columns: Sequence[str],
                 cells: Callable[[Mapping[str, Mapping]], list[str]]) -> str:
    """Markdown: one line per (mu, nuisance); per kind the ``columns`` (prefixed by the kind)
    filled by ``cells({level: row})``."""
    head = "| mu | alpha | " + " | ".join(f"{k.upper()} {c}" for k in kinds for c in columns) + " |"
    lines = [head, "|" + "---|" * (2 + len(columns) * len(kinds))]
    for mu, a in sorted({(r["mu"], r["nuisance"]) for r in rows}):
        line = [f"{mu:g}", f"{a:g}"]
        for k in kinds:
            line += cells({r["level"]: r for r in rows if r["kind"] == k and (r["mu"], r["nuisance"]) == (mu, a)})
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def coverage_table(rows: Sequence[Mapping], kinds: Sequence[str]) -> str:
    """Markdown: one line per (mu, nuisance), per kind the Wilks and Neyman coverage at 68.3% and
    95% (binomial errors; ⚠ beyond 2 errors from nominal) and the mean 68% width."""
    nominal = {"68": 0.6827, "95": 0.95}

    def cells(by_level: Mapping[str, Mapping]) -> list[str]:
        out = [_pull(by_level[lv][m], by_level[lv][f"{m}_error"], nominal[lv])
               for lv in ("68", "95") for m in ("wilks", "neyman")]
        width = by_level["68"]["width_68"]
        return out + ["-" if width is None else f"{width:.4f}"]

    return _point_table(rows, kinds, ("Wilks 68%", "Neyman 68%", "Wilks 95%", "Neyman 95%", "width 68%"), cells)


def shift_table(rows: Sequence[Mapping], kinds: Sequence[str]) -> str:
    """Markdown: per (mu, nuisance) and kind, the best fit to the pools' expectation, its shift
    from the truth in standard deviations, the datasets' spread of mu_hat over that standard
    deviation, and the Wilks coverage the shift predicts against the one measured (68.3% / 95%);
    ⚠ where the measured value is more than 2 binomial errors from the prediction."""

    def cells(by_level: Mapping[str, Mapping]) -> list[str]:
        r68 = by_level["68"]
        if r68.get("shift") is None:
            return ["-"] * 5
        spread = r68.get("spread_ratio")
        out = [f"{r68['pool_mu_hat']:.4f}", f"{r68['shift']:+.2f} σ", "-" if spread is None else f"{spread:.3f}"]
        for r in (by_level["68"], by_level["95"]):
            flag = " ⚠" if abs(r["wilks"] - r["wilks_predicted"]) > 2 * max(r["wilks_error"], 1e-9) else ""
            out.append(f"{r['wilks_predicted']:.3f} / {r['wilks']:.3f}{flag}")
        return out

    return _point_table(rows, kinds, ("mu_hat (expectation)", "shift", "spread", "Wilks 68% predicted / measured",
                                      "Wilks 95% predicted / measured"), cells)


def plot_coverage(path: Path, rows: Sequence[Mapping], kinds: Sequence[str]) -> None:
    """Coverage per (mu, nuisance) point with binomial error bars, one panel per level."""
    points = sorted({(r["mu"], r["nuisance"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.4))
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
                predicted = [r.get("wilks_predicted") for r in sel]
                if method == "wilks" and all(v is not None for v in predicted):
                    ax.plot(x, predicted, "_", color=_KIND_COLORS.get(kind), ms=12, mew=2,
                            label=f"{kind.upper()} Wilks predicted (shared shift and spread)")
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
