"""An exact many-nuisance benchmark: Gaussian processes with HistFactory-style nuisances."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from iminuit import Minuit
from scipy.optimize import brentq
from scipy.stats import chi2

from hsbi.exceptions import ConfigError, FitError

__all__ = ["ManyNP"]

_LOG_2PI = math.log(2.0 * math.pi)
#: event numbers of process c start at c * _EVENT_STRIDE; the data's after the last process
_EVENT_STRIDE = 10_000_000
_MU_BOUNDS, _ALPHA_BOUNDS, _LUMI_BOUNDS = (0.0, 10.0), (-5.0, 5.0), (0.5, 1.5)
_MC_SPLIT = {"train": 0.5, "validation": 0.2, "test": 0.3, "seed": 0}
_DATA_SPLIT = {"train": 0.0, "validation": 0.0, "test": 1.0, "seed": 0}

#: a shape NP: (feature index d_m, ((process, delta_cm, kappa_cm), ...))
ShapeEffect = tuple[int, tuple[tuple[str, float, float], ...]]
#: a normsys NP: ((process, kappa_c), ...)
NormEffect = tuple[tuple[str, float], ...]

_SHAPES: tuple[ShapeEffect, ...] = (
    (0, (("signal", 0.10, 1.03), ("bkg1", 0.15, 1.05))),
    (0, (("signal", 0.07, 0.98), ("bkg2", 0.12, 1.04))),
    (1, (("bkg1", 0.20, 1.06), ("bkg2", 0.15, 0.97))),
    (2, (("signal", 0.12, 1.02), ("bkg1", 0.18, 1.08), ("bkg2", 0.10, 0.96))),
    (3, (("bkg2", 0.20, 1.05),)),
    (1, (("signal", 0.14, 1.04), ("bkg1", -0.18, 0.95))),
)
_NORMS: tuple[NormEffect, ...] = ((("bkg1", 1.05),), (("bkg2", 1.10),), (("signal", 1.04),))


@dataclass(frozen=True)
class ManyNP:
    """Three diagonal-Gaussian processes in 4 features with 6 shape, 3 norm NPs and a lumi.

    Process ``c`` has density ``N(x; m_c + sum_m alpha_m delta_cm e_{d_m}, diag sigma_c^2)`` and
    yield ``nu_c = lam * nu0_c * [mu if c is the signal] * prod_m kappa_cm^alpha_m`` (a symmetric
    exponential: kappa_lo = 1 / kappa_hi). Constraints: ``(alpha_m - a_m)^2 / 2`` per NP and
    ``(lam - a_lumi)^2 / (2 lumi_sigma^2)``; global observables 0 and 1 for the observed data.

    Arguments:
        processes: process names; the first one is the signal (scaled by ``mu``).
        features: feature names (``D`` of them).
        means, widths: per process, the ``D`` means and standard deviations.
        nominal_yields: expected yields at mu = 1, lumi 1, all alphas 0.
        shape_effects: per shape NP ``shape_m``, the shifted feature and (process, delta, kappa).
        norm_effects: per norm NP ``norm_k``, the (process, kappa) it scales.
        lumi_sigma: the width of the luminosity constraint (pyhf's ``lumi``).
    """

    processes: tuple[str, ...] = ("signal", "bkg1", "bkg2")
    features: tuple[str, ...] = ("x0", "x1", "x2", "x3")
    means: tuple[tuple[float, ...], ...] = (
        (1.0, 1.0, 0.0, 0.0), (-0.5, 0.0, 0.5, 0.0), (0.0, -1.0, -0.5, 0.5))
    widths: tuple[tuple[float, ...], ...] = ((0.7,) * 4, (1.2,) * 4, (1.0, 0.9, 1.1, 1.0))
    nominal_yields: tuple[float, ...] = (100.0, 500.0, 400.0)
    shape_effects: tuple[ShapeEffect, ...] = _SHAPES
    norm_effects: tuple[NormEffect, ...] = _NORMS
    lumi_sigma: float = 0.02

    def __post_init__(self) -> None:
        n_c, n_d = len(self.processes), len(self.features)
        if np.shape(self.means) != (n_c, n_d) or np.shape(self.widths) != (n_c, n_d):
            raise ConfigError(f"means, widths: expected shape ({n_c}, {n_d}) (process, feature)")
        if len(self.nominal_yields) != n_c or min(self.nominal_yields) <= 0:
            raise ConfigError(
                f"nominal_yields = {self.nominal_yields}: expected {n_c} positive numbers")
        if np.min(self.widths) <= 0 or self.lumi_sigma <= 0:
            raise ConfigError("widths and lumi_sigma: expected positive numbers")
        for d, effects in self.shape_effects:
            if not 0 <= d < n_d:
                raise ConfigError(f"shape_effects feature index {d}: expected 0 .. {n_d - 1}")
            self._check_effects([(p, k) for p, _, k in effects])
        for effects in self.norm_effects:
            self._check_effects(effects)

    def _check_effects(self, effects: list[tuple[str, float]] | NormEffect) -> None:
        for process, kappa in effects:
            self.index(process)
            if not kappa > 0:
                raise ConfigError(f"kappa of process '{process}' = {kappa}: expected > 0")

    # --- names -------------------------------------------------------------------------------

    @property
    def shape_nps(self) -> tuple[str, ...]:
        return tuple(f"shape_{m}" for m in range(len(self.shape_effects)))

    @property
    def norm_nps(self) -> tuple[str, ...]:
        return tuple(f"norm_{k}" for k in range(len(self.norm_effects)))

    @property
    def parameters(self) -> tuple[str, ...]:
        """``("mu", *shape_nps, *norm_nps, "lumi")``: the order of every parameter vector."""
        return ("mu", *self.shape_nps, *self.norm_nps, "lumi")

    def index(self, process: str) -> int:
        """The position of ``process`` in ``processes``."""
        if process not in self.processes:
            raise ConfigError(f"process '{process}': expected one of {self.processes}")
        return self.processes.index(process)

    # --- arrays --------------------------------------------------------------------------------

    @cached_property
    def _delta(self) -> np.ndarray:
        """Shifts ``(C, M, D)``: ``delta_cm`` at feature ``d_m``, else 0."""
        out = np.zeros((len(self.processes), len(self.shape_effects), len(self.features)))
        for m, (d, effects) in enumerate(self.shape_effects):
            for process, delta, _ in effects:
                out[self.index(process), m, d] = delta
        return out

    @cached_property
    def _log_kappa(self) -> np.ndarray:
        """``log kappa_cj`` for every alpha ``j`` (shape NPs, then norm NPs): ``(C, M + K)``."""
        rows = [[(p, k) for p, _, k in e] for _, e in self.shape_effects] + list(self.norm_effects)
        out = np.zeros((len(self.processes), len(rows)))
        for j, effects in enumerate(rows):
            for process, kappa in effects:
                out[self.index(process), j] = math.log(kappa)
        return out

    @cached_property
    def _inv_var(self) -> np.ndarray:
        return 1.0 / np.asarray(self.widths) ** 2

    @cached_property
    def _log_norm(self) -> np.ndarray:
        return np.log(np.asarray(self.widths)).sum(1) + 0.5 * len(self.features) * _LOG_2PI

    @cached_property
    def _means(self) -> np.ndarray:
        return np.asarray(self.means, dtype=float)

    @cached_property
    def _nu0(self) -> np.ndarray:
        return np.asarray(self.nominal_yields, dtype=float)

    def _theta(self, params: Mapping[str, float] | None) -> np.ndarray:
        """Parameters by name -> vector in ``parameters`` order; missing ones at nominal."""
        theta = np.zeros(len(self.parameters))
        theta[0] = theta[-1] = 1.0
        for name, value in (params or {}).items():
            if name not in self.parameters:
                raise ConfigError(f"parameter '{name}': expected one of {self.parameters}")
            theta[self.parameters.index(name)] = float(value)
        return theta

    def _aux(self, aux: Mapping[str, float] | None) -> np.ndarray:
        """Global observables by name -> ``(M + K + 1,)`` (alphas, then lumi); defaults 0 and 1."""
        for name in aux or {}:
            if name == "mu":
                raise ConfigError("aux 'mu': expected global observables (NPs, lumi), not the POI")
        return self._theta(aux)[1:]

    def _events(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ConfigError(f"x of shape {x.shape}: expected (n, {len(self.features)})")
        return x

    def _shifted_means(self, alpha_shape: np.ndarray) -> np.ndarray:
        return self._means + np.einsum("cmd,m->cd", self._delta, alpha_shape)

    def _base_yields(self, theta: np.ndarray) -> np.ndarray:
        """Yields at ``theta`` with mu = 1, ``(C,)``."""
        return theta[-1] * self._nu0 * np.exp(self._log_kappa @ theta[1:-1])

    # --- simulator ---------------------------------------------------------------------------

    def yields(self, params: Mapping[str, float]) -> dict[str, float]:
        """Expected yield per process at ``params`` (missing: mu 1, alphas 0, lumi 1)."""
        theta = self._theta(params)
        nu = self._base_yields(theta) * np.r_[theta[0], np.ones(len(self.processes) - 1)]
        return dict(zip(self.processes, map(float, nu)))

    def sample(
        self, rng: np.random.Generator, process: str, n: int,
        alpha: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """``n`` events of ``process`` at the NP values ``alpha``: ``(n, D)``."""
        c, theta = self.index(process), self._theta(alpha)
        mean = self._shifted_means(theta[1:1 + len(self.shape_nps)])[c]
        return mean + np.asarray(self.widths[c]) * rng.standard_normal((n, len(self.features)))

    def sample_dataset(self, rng: np.random.Generator, params: Mapping[str, float]) -> np.ndarray:
        """An extended dataset at ``params``: ``n_c ~ Poisson(nu_c)`` per process, shuffled."""
        counts = rng.poisson(list(self.yields(params).values()))
        parts = [self.sample(rng, p, k, params) for p, k in zip(self.processes, counts)]
        x = np.concatenate(parts)
        return x[rng.permutation(len(x))]

    def sample_toy(
        self, rng: np.random.Generator, params: Mapping[str, float]
    ) -> tuple[np.ndarray, dict[str, float]]:
        """A dataset and global observables around ``params`` (a_m ~ N(alpha_m, 1), a_lumi ~
        N(lam, lumi_sigma)), as the Neyman construction throws them."""
        x, theta = self.sample_dataset(rng, params), self._theta(params)
        sigma = np.r_[np.ones(len(theta) - 2), self.lumi_sigma]
        aux = theta[1:] + sigma * rng.standard_normal(len(sigma))
        return x, dict(zip(self.parameters[1:], map(float, aux)))

    def log_density(self, x: np.ndarray, process: str, params: Mapping[str, float]) -> np.ndarray:
        """Normalised exact ``log p_c(x_i | alpha)``, ``(n,)``."""
        c, theta, x = self.index(process), self._theta(params), self._events(x)
        means = self._shifted_means(theta[1:1 + len(self.shape_nps)])
        return self._log_components(x.T, means)[c]

    def ratio_terms(
        self, x: np.ndarray, processes: tuple[str, ...], shape_nps: tuple[str, ...], mask: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The exact per-event terms of a declared model's likelihood (what its networks learn):
        ``log p_c(x)`` (n, C) and the shape log ratios ``log p_c(x | alpha_s = -+1) / p_c(x)``
        (n, C, S) where ``mask`` (C, S) says process c has shape NP s (0 elsewhere)."""
        logp = np.stack([self.log_density(x, p, {}) for p in processes], -1)
        lo, hi = np.zeros((len(x), *mask.shape)), np.zeros((len(x), *mask.shape))
        for c, p in enumerate(processes):
            for s, name in enumerate(shape_nps):
                if mask[c, s]:
                    lo[:, c, s] = self.log_density(x, p, {name: -1.0}) - logp[:, c]
                    hi[:, c, s] = self.log_density(x, p, {name: 1.0}) - logp[:, c]
        return logp, lo, hi

    def _log_components(self, xt: np.ndarray, means: np.ndarray) -> np.ndarray:
        """``log p_c(x_i)`` ``(C, n)`` for events ``xt (D, n)`` and process means ``(C, D)``."""
        inv = self._inv_var
        quad = -0.5 * inv @ (xt * xt) + (means * inv) @ xt
        return quad - (0.5 * np.sum(means * means * inv, axis=1) + self._log_norm)[:, None]

    # --- likelihood ----------------------------------------------------------------------------

    def nll(
        self, x: np.ndarray, params: Mapping[str, float], aux: Mapping[str, float] | None = None
    ) -> float:
        """The exact extended unbinned NLL with all constraints (no constant dropped)."""
        return self._nll_grad(self._theta(params), self._events(x).T, self._aux(aux))[0]

    def _nll_grad(
        self, theta: np.ndarray, xt: np.ndarray, aux: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """NLL and its analytic gradient in ``parameters`` order."""
        n_shape, alpha, lam = len(self.shape_nps), theta[1:-1], theta[-1]
        means = self._shifted_means(alpha[:n_shape])
        logp = self._log_components(xt, means)
        base = self._base_yields(theta)
        nu = base.copy()
        nu[0] *= theta[0]
        shift = logp.max(axis=0)
        dens = np.exp(logp - shift)
        total = nu @ dens
        q = dens / total  # (C, n): d ln(sum_c nu_c p_ci) / d nu_c
        pull, lumi_pull = alpha - aux[:-1], (lam - aux[-1]) / self.lumi_sigma
        value = nu.sum() - np.log(total).sum() - shift.sum() + 0.5 * (pull @ pull + lumi_pull**2)
        weight = 1.0 - q.sum(1)  # d NLL / d nu_c through the yields
        resp = q * nu[:, None]  # responsibilities: dNLL/dm_c = -sum_i resp_ci (x_i - m_c) / s^2
        shape = self._inv_var * (resp @ xt.T - means * resp.sum(1)[:, None])
        grad_alpha = (weight * nu) @ self._log_kappa + pull
        grad_alpha[:n_shape] -= np.einsum("cd,cmd->m", shape, self._delta)
        grad_lam = weight @ nu / lam + lumi_pull / self.lumi_sigma
        return float(value), np.concatenate([[weight[0] * base[0]], grad_alpha, [grad_lam]])

    def _migrad(
        self, x: np.ndarray, aux: Mapping[str, float] | None,
        fixed: Mapping[str, float] | None = None, start: Mapping[str, float] | None = None,
    ) -> Minuit:
        """MIGRAD with the analytic gradient: strategy 0 first (tight tolerance), then 1 and 2."""
        xt, a = np.ascontiguousarray(self._events(x).T), self._aux(aux)
        value, grad = _cached(lambda t: self._nll_grad(t, xt, a))
        m = Minuit(value, self._theta({**(start or {}), **(fixed or {})}), grad=grad,
                   name=self.parameters)
        m.errordef, m.tol = Minuit.LIKELIHOOD, 1e-3
        m.limits = [_MU_BOUNDS] + [_ALPHA_BOUNDS] * (len(self.parameters) - 2) + [_LUMI_BOUNDS]
        for name in fixed or {}:
            m.fixed[name] = True
        for strategy in (0, 1, 2):
            m.strategy = strategy
            if m.migrad().valid:
                return m
        raise FitError(f"MIGRAD did not converge (fixed = {dict(fixed or {})}): {m.fmin}")

    def fit(
        self, x: np.ndarray, aux: Mapping[str, float] | None = None,
        fixed: Mapping[str, float] | None = None,
    ) -> tuple[dict[str, float], float]:
        """The MLE of every parameter (conditional on ``fixed``) and the NLL there."""
        m = self._migrad(x, aux, fixed)
        return dict(zip(self.parameters, map(float, m.values))), float(m.fval)

    def hessian_errors(
        self, x: np.ndarray, aux: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """HESSE errors of every parameter at the global MLE."""
        m = self._migrad(x, aux)
        m.hesse()
        return dict(zip(self.parameters, map(float, m.errors)))

    def profile_interval(
        self, x: np.ndarray, level: float, aux: Mapping[str, float] | None = None
    ) -> tuple[float, float]:
        """The Wilks interval of mu: ``t(mu) = 2 (NLL(mu, profiled) - NLL_min) <= chi2_1(level)``;
        an edge beyond a bound of mu (0 or 10) is that bound."""
        if not 0.0 < level < 1.0:
            raise ConfigError(f"level = {level!r}: expected a confidence level in (0, 1)")
        best = self._migrad(x, aux)
        threshold, start, cache = chi2.ppf(level, 1), best.values.to_dict(), {}

        def excess(mu: float) -> float:
            if mu not in cache:
                fval = self._migrad(x, aux, {"mu": mu}, start).fval
                cache[mu] = 2.0 * (fval - best.fval) - threshold
            return cache[mu]

        mu_hat, width = best.values["mu"], max(best.errors["mu"], 1e-3) * math.sqrt(threshold)
        return (_edge(excess, mu_hat, -width, _MU_BOUNDS[0]),
                _edge(excess, mu_hat, width, _MU_BOUNDS[1]))

    # --- samples on disk ---------------------------------------------------------------------

    def write_samples(
        self, directory: str | Path, seed: int, n_mc_per_process: int = 20_000,
        data_params: Mapping[str, float] | None = None,
    ) -> Path:
        """Nominal MC, event-aligned up/down variations and one dataset as Parquet, plus the
        ``analysis.yaml`` that ingests them and declares the statistical model (its path)."""
        if not 0 < n_mc_per_process < _EVENT_STRIDE:
            raise ConfigError(
                f"n_mc_per_process = {n_mc_per_process}: expected 1 .. {_EVENT_STRIDE - 1}")
        out, rng = Path(directory), np.random.default_rng(seed)
        out.mkdir(parents=True, exist_ok=True)
        thrown = {"mu": 1.0, **(data_params or {})}
        theta = self._theta(thrown)
        samples = []
        for c, process in enumerate(self.processes):
            x = self.sample(rng, process, n_mc_per_process)
            w = np.full(n_mc_per_process, self.nominal_yields[c] / n_mc_per_process)
            event = c * _EVENT_STRIDE + np.arange(n_mc_per_process)
            samples.append(_write(out, process, x, w, event, self.features, process, _MC_SPLIT))
            for m, d, delta, kappa in self._variations(process):
                for sign, tag in ((1.0, "up"), (-1.0, "down")):
                    shifted = x.copy()
                    shifted[:, d] += sign * delta
                    name = f"{process}_{self.shape_nps[m]}_{tag}"
                    samples.append(_write(out, name, shifted, w * kappa**sign, event,
                                          self.features, process, _MC_SPLIT))
        data = self.sample_dataset(rng, thrown)
        event = len(self.processes) * _EVENT_STRIDE + np.arange(len(data))
        samples.append(_write(out, "data", data, np.ones(len(data)), event, self.features,
                              "data", _DATA_SPLIT))
        nominal = self._theta({})
        truth = {p: float(v) for p, v, v0 in zip(self.parameters, theta, nominal)
                 if p == "mu" or v != v0}
        config = {"name": "many-np", "samples": samples, "statmodel": self._statmodel(truth)}
        path = out / "analysis.yaml"
        header = "# The ManyNP exact benchmark (hsbi.models.many_np); paths relative to here.\n"
        path.write_text(header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=99))
        return path

    def _variations(self, process: str) -> list[tuple[int, int, float, float]]:
        """``(m, d_m, delta_cm, kappa_cm)`` of every shape NP affecting ``process``."""
        return [(m, d, delta, kappa) for m, (d, effects) in enumerate(self.shape_effects)
                for p, delta, kappa in effects if p == process]

    def _modifiers(self, process: str) -> list[dict[str, object]]:
        """The modifiers of ``process`` in the ``statmodel`` schema (mu on the signal only)."""
        out: list[dict[str, object]] = [{"name": "lumi", "type": "lumi"}]
        if process == self.processes[0]:
            out.insert(0, {"name": "mu", "type": "normfactor"})
        for name, effects in zip(self.norm_nps, self.norm_effects):
            out += [{"name": name, "type": "normsys", "lo": 1.0 / k, "hi": float(k)}
                    for p, k in effects if p == process]
        for m, *_ in self._variations(process):
            stem = f"{process}_{self.shape_nps[m]}"
            out.append({"name": self.shape_nps[m], "type": "normplusshape",
                        "up": f"{stem}_up", "down": f"{stem}_down"})
        return out

    def _statmodel(self, truth: dict[str, float]) -> dict[str, object]:
        processes = [{"name": p, "samples": [p], "modifiers": self._modifiers(p)}
                     for p in self.processes]
        channel = {"name": "SR", "features": list(self.features), "data": "data",
                   "processes": processes}
        parameters = [{"name": "mu", "bounds": list(_MU_BOUNDS), "init": 1.0},
                      {"name": "lumi", "sigma": float(self.lumi_sigma)}]
        return {"poi": "mu", "channels": [channel], "parameters": parameters, "truth": truth}


def _edge(excess: Callable[[float], float], mu_hat: float, width: float, bound: float) -> float:
    """The root of ``excess`` between ``mu_hat`` and ``bound`` (``bound`` if there is none): probe
    at ``mu_hat + 0.9 width`` (the Wald edge is ``mu_hat + width``), step on, then brentq."""
    low, high = sorted((mu_hat, bound))
    inner, outer, step = mu_hat, mu_hat + 0.9 * width, 0.3 * width
    while excess(outer := float(np.clip(outer, low, high))) <= 0:
        if outer == bound:
            return bound
        inner, outer, step = outer, outer + step, 2.0 * step
    return float(brentq(excess, *sorted((inner, outer)), xtol=1e-5))


def _cached(
    function: Callable[[np.ndarray], tuple[float, np.ndarray]],
) -> tuple[Callable[[np.ndarray], float], Callable[[np.ndarray], np.ndarray]]:
    """Split ``theta -> (value, grad)`` into two callables that share the last evaluation."""
    last: dict[bytes, tuple[float, np.ndarray]] = {}

    def evaluate(theta: np.ndarray) -> tuple[float, np.ndarray]:
        key = np.asarray(theta, dtype=float).tobytes()
        if key not in last:
            last.clear()
            last[key] = function(np.asarray(theta, dtype=float))
        return last[key]

    return (lambda t: evaluate(t)[0]), (lambda t: evaluate(t)[1])


def _write(
    out: Path, name: str, x: np.ndarray, w: np.ndarray, event: np.ndarray,
    features: tuple[str, ...], process: str, split: dict[str, float],
) -> dict[str, object]:
    """Write ``<name>.parquet`` (features, ``w``, ``event``) and return its sample entry."""
    columns = {f: pa.array(x[:, d], pa.float64()) for d, f in enumerate(features)}
    columns |= {"w": pa.array(w, pa.float64()), "event": pa.array(event, pa.int64())}
    pq.write_table(pa.table(columns), out / f"{name}.parquet")
    return {"name": name, "process": process, "files": [f"{name}.parquet"],
            "branches": list(features), "weight": "w", "event_key": ["event"],
            "split": dict(split)}
