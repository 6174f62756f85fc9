"""Combining the members of an LRE ensemble, with optional calibration, as a ``ComponentDensity``.

Per process ``c`` the member logits ``l_mc(x, z)`` (each an estimate of ``log p_c(x | z) / p_ref(x)``)
become one log ratio in three steps, each fitted on validation data (numerator ``y = 1`` against
reference ``y = 0``, the two classes weighted equally so a calibrated output stays a ratio):

1. **combination** (``method``): ``mean`` of the log ratios (the plain ensemble), ``median``, or
   ``weighted``: ``sum_m w_m l_m`` with ``w`` on the simplex, minimising the validation BCE of the
   combined logit (convex in ``w``: SLSQP finds the global minimum, bad members get ``w = 0``).
2. **calibration**: ``temperature`` (``l / T_c``, ``T_c`` minimising the validation BCE), or
   ``isotonic``: the pool-adjacent-violators fit of ``P(y = 1 | l)`` turned back into a logit and
   applied as a strictly increasing piecewise-linear map of ``l`` (slope 1 beyond the end knots).
   The ratio trick stays valid: for balanced classes the calibrated ``g(l) / (1 - g(l))`` is the
   ratio ``p_c(l) / p_ref(l)`` of the densities of the statistic ``l`` itself, which equals
   ``p_c(x | z) / p_ref(x)`` whenever ``l`` is monotone in the true ratio (Cranmer, Pavez, Louppe,
   arXiv:1506.02169); a strictly increasing map keeps that monotonicity and the event order.
3. **self-normalisation** (optional): ``log r_c(x, z) -= log N_c(z)`` with ``log N_c`` a quadratic
   in ``z`` fitted to the binned ``log mean r_c`` over the reference sample, so that
   ``E_ref[r_c(x, z)] = 1`` at every ``z`` as it must be for a normalised ``p_c(x | z)``.

All parameters are plain floats and serialise to JSON exactly (``save_combination``,
``load_combined``); nothing is pickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special

from hsbi.estimators.lre import LREEnsemble, load_members
from hsbi.exceptions import ConfigError, DataError

__all__ = [
    "CALIBRATIONS",
    "METHODS",
    "CombinedEnsemble",
    "Combination",
    "ProcessCombination",
    "balanced_bce",
    "fit_combination",
    "fit_isotonic",
    "fit_normalisation",
    "fit_temperature",
    "fit_weights",
    "load_combined",
    "pool_adjacent_violators",
    "save_combination",
]

METHODS = ("mean", "median", "weighted")
CALIBRATIONS = ("none", "temperature", "isotonic")
FORMAT = 1
_NORM_BINS, _NORM_DEGREE = 8, 2


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    """Event weights ``(n,)`` giving each class half of the total weight (classes of any size)."""
    n1 = max(float(y.sum()), 1.0)
    n0 = max(float(len(y) - y.sum()), 1.0)
    return np.where(y > 0.5, 0.5 / n1, 0.5 / n0)


def balanced_bce(logit: np.ndarray, y: np.ndarray) -> float:
    """Class-balanced binary cross-entropy of logits ``(n,)`` against labels ``(n,)`` in {0, 1}."""
    return float(np.sum(_balanced_weights(y) * (np.logaddexp(0.0, logit) - y * logit)))


def fit_weights(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Simplex weights ``(M,)`` of member logits ``(M, n)`` minimising the balanced BCE of
    ``sum_m w_m logits_m`` against ``y (n,)``."""
    m = logits.shape[0]
    if m == 1:
        return np.ones(1)
    bw = _balanced_weights(y)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = w @ logits
        grad = logits @ (bw * (special.expit(s) - y))
        return float(np.sum(bw * (np.logaddexp(0.0, s) - y * s))), grad

    res = optimize.minimize(
        loss, np.full(m, 1.0 / m), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def fit_temperature(logit: np.ndarray, y: np.ndarray) -> float:
    """The temperature ``T`` minimising the balanced BCE of ``logit / T`` (``logit``, ``y``: ``(n,)``)."""
    res = optimize.minimize_scalar(
        lambda log_t: balanced_bce(logit * np.exp(-log_t), y), bounds=(-7.0, 7.0), method="bounded",
        options={"xatol": 1e-9},
    )
    return float(np.exp(res.x))


def pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted isotonic regression of ``y (n,)`` (already in the order of the regressor).

    Returns per block (strictly increasing values): ``value``, summed ``weight`` and ``end``
    (index one past its last element), each ``(B,)``.
    """
    values, weights, ends = [], [], []
    for i, (yi, wi) in enumerate(zip(y.tolist(), w.tolist())):
        values.append(yi)
        weights.append(wi)
        ends.append(i + 1)
        while len(values) > 1 and values[-2] >= values[-1]:
            v, wt, e = values.pop(), weights.pop(), ends.pop()
            total = weights[-1] + wt
            values[-1] = (values[-1] * weights[-1] + v * wt) / total
            weights[-1], ends[-1] = total, e
    return np.array(values), np.array(weights), np.array(ends)


def fit_isotonic(logit: np.ndarray, y: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots ``(logit_in, logit_out)`` of the isotonic calibration map (both strictly increasing).

    ``P(y = 1 | logit)`` by pool-adjacent-violators with balanced class weights; each block gives a
    knot at its mean input logit and the logit of its probability. A first block at 0 or a last at 1
    is moved halfway to its neighbour's probability, so every output logit is finite.
    """
    order = np.argsort(logit, kind="stable")
    s, yy = logit[order], y[order]
    p, _, ends = pool_adjacent_violators(yy, _balanced_weights(yy))
    starts = np.r_[0, ends[:-1]]
    knots_in = np.array([s[a:b].mean() for a, b in zip(starts, ends)])
    if len(p) > 1:
        p[0] = p[0] if p[0] > 0 else 0.5 * p[1]
        p[-1] = p[-1] if p[-1] < 1 else 0.5 * (1 + p[-2])
    p = np.clip(p, 1e-12, 1 - 1e-12)
    keep = np.r_[True, np.diff(knots_in) > 0]  # tied input logits across blocks: keep the first
    return tuple(knots_in[keep].tolist()), tuple(special.logit(p[keep]).tolist())


def _isotonic_map(logit: np.ndarray, knots: tuple[Sequence[float], Sequence[float]]) -> np.ndarray:
    """Piecewise-linear through the knots, slope 1 beyond the first and last knot."""
    k_in, k_out = np.asarray(knots[0]), np.asarray(knots[1])
    out = np.interp(logit, k_in, k_out)
    out = np.where(logit < k_in[0], k_out[0] + logit - k_in[0], out)
    return np.where(logit > k_in[-1], k_out[-1] + logit - k_in[-1], out)


def fit_normalisation(log_ratio: np.ndarray, nuisance: np.ndarray) -> tuple[float, ...]:
    """Coefficients (increasing degree) of ``log N(z)``, the quadratic through the log mean of
    ``exp(log_ratio)`` over the reference sample in equal-population bins of ``z`` (``(n,)`` each)."""
    edges = np.quantile(nuisance, np.linspace(0, 1, _NORM_BINS + 1))
    idx = np.clip(np.searchsorted(edges, nuisance, side="right") - 1, 0, _NORM_BINS - 1)
    used = [b for b in range(_NORM_BINS) if np.any(idx == b)]
    centres = np.array([nuisance[idx == b].mean() for b in used])
    shift = log_ratio.max()
    log_means = np.array([np.log(np.mean(np.exp(log_ratio[idx == b] - shift))) + shift for b in used])
    counts = np.array([np.sum(idx == b) for b in used])
    degree = min(_NORM_DEGREE, len(used) - 1)
    return tuple(np.polynomial.polynomial.polyfit(centres, log_means, degree, w=np.sqrt(counts)).tolist())


@dataclass(frozen=True)
class ProcessCombination:
    """Fitted parameters of one process: member ``weights`` ``(M,)`` (method ``weighted``),
    ``temperature``, isotonic ``knots`` ``(logit_in, logit_out)``, and ``normalisation``
    coefficients of ``log N(z)`` (increasing degree); ``None`` where not used."""

    weights: tuple[float, ...] | None = None
    temperature: float | None = None
    knots: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    normalisation: tuple[float, ...] | None = None

    def combine(self, method: str, member: np.ndarray) -> np.ndarray:
        """Member logits ``(M, ...)`` -> combined, uncalibrated logit ``(...)``."""
        if method == "median":
            return np.median(member, axis=0)
        if method == "weighted":
            return np.tensordot(np.asarray(self.weights), member, axes=1)
        return member.mean(0)

    def calibrate(self, logit: np.ndarray) -> np.ndarray:
        """The calibration map (identity if none was fitted), elementwise."""
        if self.temperature is not None:
            return logit / self.temperature
        if self.knots is not None:
            return _isotonic_map(logit, self.knots)
        return logit

    def apply(self, method: str, member: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """Member logits ``(M, ...)`` and nuisance values broadcasting to ``(...)`` -> ``log r (...)``."""
        out = self.calibrate(self.combine(method, member))
        if self.normalisation is not None:
            out = out - np.polynomial.polynomial.polyval(nuisance, np.asarray(self.normalisation))
        return out


@dataclass(frozen=True)
class Combination:
    """How the ``members`` of an LRE ensemble are combined, per process (JSON-serialisable)."""

    method: str = "mean"
    calibration: str = "none"
    normalise: bool = False
    members: int = 1
    processes: tuple[tuple[str, ProcessCombination], ...] = ()

    @property
    def plain(self) -> bool:
        """The unweighted mean of the log ratios, nothing else (the ensemble's own combination)."""
        return self.method == "mean" and self.calibration == "none" and not self.normalise

    def apply(self, member: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """Member logits ``(M, ..., C)`` -> combined log ratios ``(..., C)``; ``nuisance``
        broadcasts to ``(...)``."""
        parts = [pc.apply(self.method, member[..., c], nuisance) for c, (_, pc) in enumerate(self.processes)]
        return np.stack(parts, axis=-1)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self), "processes": {p: asdict(pc) for p, pc in self.processes}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "combination") -> Combination:
        """The inverse of :meth:`to_dict`; a malformed description raises ``DataError``."""
        try:
            if data["format"] != FORMAT or data["method"] not in METHODS or data["calibration"] not in CALIBRATIONS:
                raise ValueError("unknown format, method or calibration")
            procs = tuple((p, _process_from_dict(pc)) for p, pc in data["processes"].items())
            return cls(data["method"], data["calibration"], bool(data["normalise"]), int(data["members"]), procs)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{source}: not an ensemble combination written by hsbi ({err})") from None


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _process_from_dict(data: Mapping[str, Any]) -> ProcessCombination:
    return ProcessCombination(**{k: _tuple(data[k]) for k in ("weights", "temperature", "knots", "normalisation")})


def fit_combination(
    validation: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    method: str = "mean",
    calibration: str = "none",
    normalise: bool = False,
) -> Combination:
    """Fit a :class:`Combination` per process on validation data.

    ``validation[process] = (logits (M, n), y (n,), z (n,))``: member logits of the numerator
    (``y = 1``) and reference (``y = 0``) events with their nuisance values.
    """
    procs = []
    for proc, (logits, y, z) in validation.items():
        pc = ProcessCombination(weights=tuple(fit_weights(logits, y).tolist()) if method == "weighted" else None)
        combined = pc.combine(method, logits)
        if calibration == "temperature":
            pc = replace(pc, temperature=fit_temperature(combined, y))
        elif calibration == "isotonic":
            pc = replace(pc, knots=fit_isotonic(combined, y))
        if normalise:
            if z.ndim != 1:
                raise ConfigError("config key 'estimator.normalise' = True: self-normalisation needs a "
                                  "model with one nuisance parameter")
            ref = y < 0.5
            pc = replace(pc, normalisation=fit_normalisation(pc.calibrate(combined[ref]), z[ref]))
        procs.append((proc, pc))
    members = next(iter(validation.values()))[0].shape[0]
    return Combination(method, calibration, normalise, members, tuple(procs))


class CombinedEnsemble:
    """An :class:`LREEnsemble` with a fitted :class:`Combination` (``ComponentDensity``).

    ``log_components(x, z)`` is ``(K, n, C)``; ``spread(x, z)`` the members' standard deviation
    of the log ratio, same shape (zero for one member). The plain combination evaluates exactly as
    the ensemble itself.
    """

    def __init__(self, ensemble: LREEnsemble, combination: Combination) -> None:
        names = tuple(p for p, _ in combination.processes)
        if names != ensemble.processes or combination.members != len(ensemble.members):
            raise DataError(
                f"ensemble combination for {combination.members} members of {list(names)} does not match "
                f"the ensemble's {len(ensemble.members)} members of {list(ensemble.processes)}"
            )
        self.ensemble, self.combination = ensemble, combination
        self.processes = ensemble.processes

    @property
    def members(self) -> list:
        return self.ensemble.members

    def astype(self, dtype: Any) -> CombinedEnsemble:
        """The same combination of the ensemble evaluated in ``dtype`` (a torch dtype)."""
        return CombinedEnsemble(self.ensemble.astype(dtype), self.combination)

    def member_log_ratios(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """Per member: ``(M, n, C)`` with one nuisance value per event (``x (n, D)``, ``nuisance (n,)``
        or ``(n, P)``)."""
        return self.ensemble.member_log_ratios(x, nuisance)

    def log_ratios(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """Combined ``log r_c(x_i, z_i)``, ``(n, C)``, with one nuisance value per event."""
        return self.combination.apply(self.member_log_ratios(x, nuisance), np.asarray(nuisance, float))

    def _grid(self, x: np.ndarray, nuisance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Member logits ``(M, K, n, C)`` on the nuisance grid ``(K,)`` (or ``(K, P)``), and the
        grid broadcasting against ``(K, n)``."""
        z = np.asarray(nuisance, dtype=float)
        z = z.reshape(-1) if z.ndim < 2 else z
        n, k = len(x), len(z)
        member = self.ensemble.member_log_ratios(np.tile(x, (k, 1)), np.repeat(z, n, axis=0))
        return member.reshape(member.shape[0], k, n, -1), z.reshape(k, 1, *z.shape[1:])

    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        if self.combination.plain:
            return self.ensemble.log_components(x, nuisance)
        member, z = self._grid(x, nuisance)
        return self.combination.apply(member, z)

    def spread(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """Member standard deviation (ddof 1) of the log ratio, ``(K, n, C)``."""
        member, _ = self._grid(x, nuisance)
        return member.std(0, ddof=1) if len(member) > 1 else np.zeros(member.shape[1:])


def save_combination(path: Path, combination: Combination) -> None:
    """Write the combination's parameters as JSON (floats round-trip exactly)."""
    Path(path).write_text(json.dumps(combination.to_dict(), indent=1) + "\n")


def load_combined(member_paths: Sequence[Path], combination_json: Path) -> CombinedEnsemble:
    """The ensemble of ``member_paths`` with the combination written by :func:`save_combination`."""
    try:
        data = json.loads(Path(combination_json).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read ensemble combination {combination_json}: {err}") from None
    combination = Combination.from_dict(data, str(combination_json))
    return CombinedEnsemble(load_members(member_paths), combination)
