"""A case study's report from the DAG's results: data, features under the nuisance, estimator
diagnostics, observed intervals, belts and the coverage table (``HiggsStudy``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hsbi.config import AnalysisConfig
from hsbi.data.events import read_split
from hsbi.exceptions import ConfigError
from hsbi.inference.minuit import STRICT_TOL
from hsbi.models.base import MixtureModel
from hsbi.plotting.study import (
    coverage_rows,
    coverage_table,
    plot_coverage,
    plot_features,
    shift_table,
    write_report,
)

__all__ = ["check_study_points", "study_report"]


def check_study_points(model: MixtureModel, bounds: tuple[float, float], mus: Sequence[float],
                       nuisances: Sequence[float]) -> None:
    """The study's truth points must lie in the model's POI range and in the fitted nuisance
    ``bounds`` (``inference.nuisance_bounds``, inside the trained range)."""
    lo, hi = bounds
    for a in nuisances:
        if not lo <= a <= hi:
            raise ConfigError(f"study point {model.nuisance_label} = {a:g} is outside the fitted range "
                              f"[{lo:g}, {hi:g}] (inference.nuisance_bounds; trained on "
                              f"[{model.nuisance_range[0]:g}, {model.nuisance_range[1]:g}], model.parameters)")
    for mu in mus:
        if not model.poi_range[0] <= mu <= model.poi_range[1]:
            raise ConfigError(f"study point mu = {mu:g} is outside the {model.poi_label} range "
                              f"[{model.poi_range[0]:g}, {model.poi_range[1]:g}]")


def _mass_check(dirs: Sequence[str | Path], columns: Sequence[str]) -> str:
    """The massless m_vis at alpha = 1 against the extract's DER_mass_vis (if ingested)."""
    from hsbi.models.higgs_tes import tes_features

    try:
        cols, _, _ = read_split(dirs, "test", [*columns, "DER_mass_vis"])
    except Exception:  # noqa: BLE001 - the check is optional: DER_mass_vis not ingested
        return "(DER_mass_vis not ingested: no cross-check)"
    diff = tes_features(cols[:, :-1], 1.0, log=False)[:, 0] - cols[:, -1]
    q = np.quantile(diff, [0.01, 0.5, 0.99])
    return (f"Against the extract's own `DER_mass_vis` (test split, {len(diff)} events) the massless "
            f"m_vis at alpha = 1 differs by {q[1]:+.3f} GeV (median), [{q[0]:+.3f}, {q[2]:+.3f}] GeV "
            f"(1-99%), at most {np.abs(diff).max():.3f} GeV: the extract's visible mass is itself "
            "massless up to the rounding of the stored columns.")


def _short(message: object) -> str:
    """A failure message in one table cell (iminuit's boxed summary left out)."""
    return str(message).split("\u250c")[0].splitlines()[0].rstrip(": ")


def _intervals_table(results: Mapping[str, Mapping]) -> str:
    lines = ["| estimator | best fit mu | alpha hat | level | Wilks (asymptotic) | Neyman | MINOS | expected (Asimov) |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        for level in r["levels"]:
            iv = r["intervals"]
            cells = [kind.upper(), f"{r['best_fit']['mu']:.4f}", f"{r['best_fit']['nuisance']:.4f}",
                     f"{100 * r['levels'][level]:.1f}%"]
            tol = r.get("details", {}).get(kind, {}).get("minos_tolerance", {}).get(level)
            for key in ("asymptotic", "neyman", "minos", "expected"):
                v = iv[key][level]
                cells.append(f"[{v[0]:.4f}, {v[1]:.4f}]" if isinstance(v, list) else _short(v))
                if key == "minos" and isinstance(v, list) and tol is not None and tol > STRICT_TOL:
                    cells[-1] += f" (tolerance {tol:g})"
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _splits_table(summary: Mapping) -> str:
    lines = ["| split | process | events | effective events (sum w)^2/sum w^2 |", "|---|---|---|---|"]
    for split, procs in summary.items():
        for proc, s in procs.items():
            lines.append(f"| {split} | {proc} | {s['events']} | {s['effective']:.0f} |")
    return "\n".join(lines)


def _shift_section(rows: Sequence[Mapping], kinds: Sequence[str]) -> str:
    """Why a Wilks coverage can miss nominal on pooled datasets: the bias they all share."""
    if not rows or rows[0].get("shift") is None:
        return ""
    return ("**What the datasets share.** All datasets of a point are drawn from one set of pools of the "
            "test events, so whatever the pools' own distribution does to the fit (the finite held-out sample "
            "differs from the training sample by sampling fluctuations; the estimator mismodels some of it) "
            "shifts them all alike. The fit to the pools' expectation (every pool event weighted by its "
            "expected count) measures that shift independently of the datasets: `shift` b = sign(mu_hat - mu) "
            "sqrt(t_A(mu)) in standard deviations of mu_hat. `spread` s: the datasets' standard deviation of "
            "mu_hat over the expectation's. A Gaussian mu_hat with that shift and spread covers with "
            "P(|s Z + b| < sqrt(F^-1_chi2_1(CL))): the `predicted` Wilks coverage (a shift of 0.5 sigma alone "
            "takes 68.3% to 62.4%). The Neyman construction calibrates on reference toys from the same pools, "
            "so the shift does not move its coverage. ⚠ marks a measured Wilks coverage more than 2 binomial "
            "errors from its prediction.\n\n"
            + shift_table(rows, kinds) + "\n\n" + _shift_summary(rows, kinds))


def _shift_summary(rows: Sequence[Mapping], kinds: Sequence[str]) -> str:
    """Sum of squared pulls of the measured Wilks coverage against nominal and against the
    prediction, per kind and level."""
    nominal = {"68": 0.6827, "95": 0.95}
    parts = []
    for k in kinds:
        for level in ("68", "95"):
            sel = [r for r in rows if r["kind"] == k and r["level"] == level and r.get("wilks_predicted") is not None]
            if not sel:
                continue
            pull = lambda ref: sum(((r["wilks"] - ref(r)) / max(r["wilks_error"], 1e-9)) ** 2 for r in sel)  # noqa: E731
            parts.append(f"{k.upper()} {level}%: {pull(lambda r: nominal[level]):.1f} against nominal, "
                         f"{pull(lambda r: r['wilks_predicted']):.1f} against the prediction ({len(sel)} points)")
    return ("Sum of squared pulls of the measured Wilks coverage (binomial errors): " + "; ".join(parts) + ". "
            "The spread is estimated from the same datasets, so the second sum runs below its count.")


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec} s" if minutes else f"{sec} s"


def _run_section(timing: Mapping) -> str:
    """Where the time of the study went, from the upstream manifests."""
    by_task = ", ".join(f"{family} {_duration(sec)} ({n})" for family, (n, sec) in timing["per_family"].items())
    span = (f"The first of them started at {timing['first_started']} and the last was made at "
            f"{timing['last_created']}: a span of **{_duration(timing['span_seconds'])}**. When one cold "
            "`law run HiggsStudy` (one worker) made them all, that span plus this report's own step is the "
            "run's wall time; a span much longer than the summed time means the inputs came from several runs.")
    return (f"This report was made from {timing['artifacts']} upstream artifacts in the store; "
            f"{timing['timed']} of them record their production time. Summed production time: "
            f"**{_duration(timing['seconds'])}** (by task, with the number of artifacts: {by_task}). " + span)


def study_report(out: Path, cfg: AnalysisConfig, model: MixtureModel, dirs: Sequence[str | Path],
                 results: Mapping[str, Mapping], coverage: Mapping[str, Sequence[Mapping]],
                 images: Mapping[str, Path], alphas: Sequence[float], timing: Mapping | None = None) -> dict:
    """Write ``report.md``, ``features.png``, ``coverage.png``, ``study.json`` and the copied
    ``images`` (``{name: png}``) into ``out``; return the JSON summary.

    ``results``: ``result.json`` per estimator kind (InferProfileLikelihood); ``coverage``:
    per kind the ``coverage.json`` of every truth point (CoverageStudy); ``timing``: the
    upstream artifacts' production times (:func:`hsbi.store.tools.run_timing`), written to
    ``run.md`` and ``run.json`` (records of the run: declare them volatile).
    """
    kinds = list(results)
    feats = {proc: {a: model.process_events(proc, a) for a in alphas} for proc in model.processes}
    plot_features(out / "features.png", feats, model.feature_labels, "alpha")
    rows = coverage_rows(coverage)
    plot_coverage(out / "coverage.png", rows, kinds)
    for name, src in images.items():
        shutil.copyfile(src, out / f"{name}.png")
    inf, tr, sim = cfg.inference, cfg.training, cfg.simulation
    splits = model.split_summary()
    summary = {"results": results, "coverage": rows, "splits": splits, "alphas": list(alphas)}
    (out / "study.json").write_text(json.dumps(summary, indent=1) + "\n")
    img = lambda name, alt: f"![{alt}]({name}.png)" if name in images else f"({alt}: not produced)"  # noqa: E731
    sections = [
        ("Data", "ATLAS HiggsML 2014 open data (CERN Open Data record 328, CC0), a 22,889-event extract "
         "(`tests/data/higgs/`, provenance in `tests/data/PROVENANCE.json`). Events are split by a hash "
         "of `EventId` (no event in two splits): the ratio and flow networks are trained on draws from "
         "`train`, validated on `validation`; the observed data, Neyman toys and coverage datasets are "
         "drawn from `test`. Within a process an event is drawn with probability proportional to its "
         "weight (the physical mix of backgrounds and signal production modes).\n\n" + _splits_table(splits)),
        ("Features and the tau energy scale", (model.__doc__ or "").split("\n\n")[0] + "\n\n"
         "Features: " + ", ".join(f"`{lab}`" for lab in model.feature_labels) + ". The TES factor alpha "
         "scales the hadronic tau's pT; m_vis is computed with massless four-vectors "
         "(m_vis^2 = 2 alpha pT_tau pT_lep (cosh d_eta - cos d_phi)), so m_vis scales as sqrt(alpha) and "
         "the pT ratio as 1/alpha. " + _mass_check(dirs, model.columns) + " The selection threshold "
         "(pT_tau > 20 GeV) is not re-applied after scaling: the yields do not depend on alpha.\n\n"
         f"![feature distributions at alpha = {', '.join(f'{a:g}' for a in alphas)}](features.png)"),
        ("Estimators", f"Per process, {tr.members}-member ensembles of {', '.join(k.upper() for k in kinds)} "
         f"conditioned on alpha ~ U({model.nuisance_range[0]:g}, {model.nuisance_range[1]:g}) (fitted within "
         f"[{inf.nuisance_bounds[0]:g}, {inf.nuisance_bounds[1]:g}]), "
         f"{sim.n_train} training and {sim.n_val} validation events per class and process, "
         f"{tr.max_epochs} epochs; ratio denominator: `simulation.reference: {sim.reference}`. "
         "LRE closure and calibration on held-out validation events (the Ensemble step):\n\n"
         + img("closure", "LRE closure") + "\n" + img("calibration", "LRE calibration")),
        ("Observed pseudo-data", f"One pseudo-dataset at mu = {inf.truth.mu:g}, alpha = {inf.truth.nuisance:g} "
         f"({next(iter(results.values()))['observed']['events']} events, n ~ Poisson({inf.n_expected:g})), "
         f"alpha {'free within its bounds' if inf.constraint == 'none' else f'{inf.constraint} constraint, sigma {inf.constraint_sigma:g}'}. "
         f"Neyman belts: {inf.neyman.points} points in [{inf.neyman.mu_min:g}, {inf.neyman.mu_max:g}], "
         f"{inf.neyman.toys} {inf.neyman.method} toys per point at the conditional MLE of alpha.\n\n"
         + _intervals_table(results) + "\n\n"
         + "\n".join(img(f"profile_{k}", f"{k.upper()} profile scan and belt") for k in kinds) + "\n"
         + "\n".join(img(f"belt_{k}", f"{k.upper()} Neyman belt") for k in kinds)),
        ("Coverage", f"{rows[0]['datasets'] if rows else 0} pseudo-datasets per point drawn from the test "
         "events, plus as many independent reference toys for the Neyman critical value "
         + ("at the truth (the ideal profile construction), both resampled from one set of per-process pools of "
            "the test events" if inf.coverage.reference == "truth" else "at each of 5 quantiles of the datasets' "
            "conditional MLE of alpha, interpolated to each dataset's (the construction NeymanToys makes)")
         + "; alpha profiled within its bounds; failed fits count as t = +inf. Errors are binomial: sqrt(p(1-p)/N) for Wilks, sqrt(p(1-p)(1/N + 1/N_ref)) for Neyman "
         "(the critical value's own error); ⚠ marks a value more than 2 errors from nominal. Width: mean 68% Wilks interval width.\n\n"
         + coverage_table(rows, kinds) + "\n\n![coverage](coverage.png)\n\n"
         + _shift_section(rows, kinds)),
    ]
    if timing is not None:  # a record of the run, kept out of the reproducible files
        (out / "run.json").write_text(json.dumps(dict(timing), indent=1) + "\n")
        (out / "run.md").write_text(f"# {cfg.name}: the run that made the report\n\n{_run_section(timing)}\n")
        sections.append(("Run", "Where the study's time went is a record of the run that made this report, not "
                         "of its content: [run.md](run.md) (and `run.json`; `hsbi store reproduce` checks that "
                         "they are there but does not compare them)."))
    write_report(out / "report.md", f"{cfg.name}: signal fraction with a tau-energy-scale nuisance", sections)
    return summary
