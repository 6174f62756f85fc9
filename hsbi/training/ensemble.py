"""The Ensemble step: fit how an LRE ensemble's members are combined and calibrated, and judge it.

The validation split is halved (alternate events of each class): the combination (weights,
calibration, normalisation; see :mod:`hsbi.estimators.combine`) is fitted on one half, and the
other half measures it against every member: closure chi2 per feature and process (the reference
reweighted by ``r(x, z)`` against the numerator), class-balanced BCE, the expected calibration
error, and the member spread of the log ratio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from hsbi.data import training_arrays
from hsbi.diagnostics import (
    closure_chi2,
    expected_calibration_error,
    plot_closure,
    plot_reliability,
    reliability_curve,
)
from hsbi.estimators import LREEnsemble, load_ensemble
from hsbi.estimators.combine import CALIBRATIONS, METHODS, Combination, CombinedEnsemble, balanced_bce, fit_combination
from hsbi.exceptions import ConfigError

__all__ = ["combine_ensemble"]


def _check(ensemble: LREEnsemble | Sequence[Path], method: str, calibration: str) -> LREEnsemble:
    if method not in METHODS:
        raise ConfigError(f"config key 'estimator.combine' = {method!r}: expected one of {METHODS}")
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"config key 'estimator.calibration' = {calibration!r}: expected one of {CALIBRATIONS}")
    ens = ensemble if isinstance(ensemble, LREEnsemble) else load_ensemble([Path(p) for p in ensemble])
    if not isinstance(ens, LREEnsemble):
        raise ConfigError("config key 'estimator.kind' = 'dle': combining and calibrating members needs ratio "
                          "estimators (estimator.kind: lre)")
    return ens


def _validation(ens: LREEnsemble, samples: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per process: validation ``x (n, D)``, ``z``, ``y``, member logits ``(M, n, C)`` and the
    ``fit`` mask (even events of each class; the odd ones are the test half)."""
    out = {}
    for proc in ens.processes:
        x, z, y = training_arrays(samples, "val", proc)
        n1 = int(y.sum())
        fit = np.r_[np.arange(n1) % 2 == 0, np.arange(len(y) - n1) % 2 == 0]
        out[proc] = {"x": x, "z": z, "y": y, "logits": ens.member_log_ratios(x, z), "fit": fit}
    return out


def _uncalibrated(comb: Combination) -> Combination:
    procs = tuple((p, replace(pc, temperature=None, knots=None, normalisation=None)) for p, pc in comb.processes)
    return replace(comb, calibration="none", normalise=False, processes=procs)


def _test_logits(comb: Combination, val: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Per variant (``ensemble``, ``uncalibrated`` if calibrated, ``member m``) and process: the
    test-half logits of that process's classifier, ``(n_test,)``."""
    variants = {"ensemble": comb}
    if comb.calibration != "none" or comb.normalise:
        variants["uncalibrated"] = _uncalibrated(comb)
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in variants}
    for c, (proc, v) in enumerate(val.items()):
        member, z = v["logits"][:, ~v["fit"]], v["z"][~v["fit"]]
        for name, variant in variants.items():
            out[name][proc] = variant.apply(member, z)[:, c]
        for m in range(len(member)):
            out.setdefault(f"member {m}", {})[proc] = member[m, :, c]
    return out


def _closure(val: Mapping[str, Mapping[str, np.ndarray]], logits: Mapping[str, Mapping[str, np.ndarray]]
             ) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Closure chi2 per variant, process and feature on the test half."""
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name, by_proc in logits.items():
        out[name] = {}
        for proc, v in val.items():
            y = v["y"][~v["fit"]]
            x = v["x"][~v["fit"]]
            out[name][proc] = closure_chi2(x[y > 0.5], x[y < 0.5], np.exp(by_proc[proc][y < 0.5]))
    return out


def _worst_member(closure: Mapping[str, Mapping[str, list[dict[str, float]]]]) -> dict[str, list[dict[str, Any]]]:
    """Per process and feature: the ensemble's chi2 next to the worst member's."""
    members = [k for k in closure if k.startswith("member")]
    out = {}
    for proc, features in closure["ensemble"].items():
        out[proc] = []
        for f, entry in enumerate(features):
            worst = max(closure[m][proc][f]["chi2"] for m in members)
            out[proc].append({"ensemble": entry["chi2"], "worst_member": worst,
                              "ensemble_below_worst": bool(entry["chi2"] < worst)})
    return out


def _spread(val: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Member standard deviation of the log ratio on the test-half reference events, per process."""
    out = {}
    for c, (proc, v) in enumerate(val.items()):
        logits = v["logits"][:, ~v["fit"] & (v["y"] < 0.5), c]
        sd = logits.std(0, ddof=1) if len(logits) > 1 else np.zeros(logits.shape[1])
        out[proc] = {"mean": float(sd.mean()), "median": float(np.median(sd)), "p95": float(np.quantile(sd, 0.95))}
    return out


def _calibration(val: Mapping[str, Mapping[str, np.ndarray]], logits: Mapping[str, Mapping[str, np.ndarray]]
                 ) -> tuple[dict, dict, dict]:
    """ECE, BCE and reliability curves per variant and process on the test half."""
    ece: dict[str, dict] = {name: {} for name in logits}
    bce: dict[str, dict] = {name: {} for name in logits}
    curves: dict[str, dict] = {proc: {} for proc in val}
    for name, by_proc in logits.items():
        for proc, v in val.items():
            y = v["y"][~v["fit"]]
            prob = special.expit(by_proc[proc])
            ece[name][proc] = expected_calibration_error(prob, y)
            bce[name][proc] = balanced_bce(by_proc[proc], y)
            curves[proc][name] = reliability_curve(prob, y)
    return ece, bce, curves


def combine_ensemble(
    ensemble: LREEnsemble | Sequence[Path],
    samples: Mapping[str, np.ndarray],
    method: str = "mean",
    calibration: str = "none",
    normalise: bool = False,
    plot_dir: Path | None = None,
) -> tuple[CombinedEnsemble, dict[str, Any]]:
    """Fit the combination of an LRE ensemble (or its member directories) on half the validation
    split of ``samples`` (keys ``val_<process>_x|z``, ``val_reference_x|z``) and measure it on the
    other half. Returns the combined ensemble and a JSON-able report (``combination``,
    ``closure``, ``closure_vs_worst_member``, ``ece``, ``bce``, ``spread``, event counts);
    with ``plot_dir`` also writes ``closure.png`` and ``calibration.png`` there."""
    ens = _check(ensemble, method, calibration)
    val = _validation(ens, samples)
    fit_data = {p: (v["logits"][:, v["fit"], c], v["y"][v["fit"]], v["z"][v["fit"]])
                for c, (p, v) in enumerate(val.items())}
    comb = fit_combination(fit_data, method, calibration, normalise)
    logits = _test_logits(comb, val)
    closure = _closure(val, logits)
    ece, bce, curves = _calibration(val, logits)
    report = {
        "method": method, "calibration": calibration, "normalise": normalise, "members": len(ens.members),
        "events": {p: {"fit": int(v["fit"].sum()), "test": int((~v["fit"]).sum())} for p, v in val.items()},
        "combination": comb.to_dict(), "spread": _spread(val), "closure": closure,
        "closure_vs_worst_member": _worst_member(closure), "ece": ece, "bce": bce,
    }
    if plot_dir is not None:
        _plots(Path(plot_dir), val, logits, closure, curves)
    return CombinedEnsemble(ens, comb), report


def _plots(out: Path, val: Mapping[str, Mapping[str, np.ndarray]], logits: Mapping[str, Mapping[str, np.ndarray]],
           closure: Mapping[str, Any], curves: Mapping[str, Any]) -> None:
    tests = {p: (v["x"][~v["fit"]], v["y"][~v["fit"]]) for p, v in val.items()}
    first = next(iter(tests))
    x_ref = tests[first][0][tests[first][1] < 0.5]  # the reference half is the same for every process
    plot_closure(out / "closure.png", {p: x[y > 0.5] for p, (x, y) in tests.items()}, x_ref,
                 {p: np.exp(logits["ensemble"][p][y < 0.5]) for p, (_, y) in tests.items()},
                 [f"x{i + 1}" for i in range(x_ref.shape[1])], closure)
    plot_reliability(out / "calibration.png", curves)
