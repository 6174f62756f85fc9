"""Binned NSBI through pyhf: a learned observable's histograms as a HistFactory workspace, and
hsbi's own binned likelihood of such a workspace (numpy only, no torch).

Model (HistFactory in pyhf's conventions, ``docs/statistics.md``). Over the bins ``b`` of all
channels (sorted by name, as pyhf orders them) the expected count is

    nu_b = sum_s gamma_b^[s has staterror] F_s (n0_sb + sum_h D_shb(alpha_h)),
    F_s  = prod(normfactors) * lumi * prod_k I_sk(alpha_k),

``I`` the normsys interpolation (code 1: ``kappa^|alpha|``; code 4: degree-6 polynomial inside
``|alpha| < 1``) and ``D`` the histosys one (code 0: piecewise linear; code 4p: polynomial inside
``|alpha| < 1``), exactly as ``pyhf.interpolators``. The NLL of counts ``n_b``, global observables
``a_j`` is

    -ln L = sum_b [nu_b - n_b ln nu_b + ln Gamma(n_b + 1)] + sum_j (theta_j - a_j)^2 / (2 sigma_j^2)

over the constrained parameters: alphas (a = 0, sigma = 1), lumi (a = 1, its sigma) and the
staterror gammas (Barlow-Beeston lite: a = 1, ``sigma_b = sqrt(sum_s err_sb^2) / sum_s n0_sb`` over
the samples carrying it). It is pyhf's ``-logpdf`` less the constraints' normalisation constants.
:func:`binned_spec` exports a normplusshape NP as a ``normsys`` (the variations' yield ratios) plus a
``histosys`` on the same parameter whose templates are the variations scaled to the nominal yield,
so the yield effect is counted once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType

import numpy as np
from scipy import stats
from scipy.special import gammaln, xlogy

from hsbi.exceptions import ConfigError, DataError, FitError
from hsbi.inference.fitting import crossing_edges
from hsbi.inference.model import Parameter, ParameterSpace
from hsbi.models.interpolation import code4_coefficients

__all__ = ["BinnedData", "BinnedLikelihood", "BinnedModel", "Channel", "Process", "Sample", "binned_spec",
           "histogram", "hs3_spec", "log_odds", "nsbi_channel", "pyhf_fit"]

#: hsbi's parameter kind of each supported pyhf modifier type
_KINDS = {"normfactor": "normfactor", "normsys": "alpha", "histosys": "alpha", "lumi": "lumi",
          "staterror": "staterror"}
_CODES = (("code1", "code4"), ("code0", "code4p"))  # normsys, histosys


# --- export --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """Events of one sample: observable values (N,) and weights (N,) (None: 1 each)."""

    values: np.ndarray
    weights: np.ndarray | None = None


@dataclass(frozen=True)
class Process:
    """One process of a channel: its nominal sample, normplusshape NPs (``shapes[np] = (down,
    up)`` samples, or the nominal events reweighted), normsys NPs (``normsys[np] = (kappa_lo,
    kappa_hi)``), the normfactor it carries (e.g. the POI) and whether lumi and staterror apply."""

    name: str
    nominal: Sample
    shapes: Mapping[str, tuple[Sample, Sample]] = field(default_factory=dict)
    normsys: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    normfactor: str | None = None
    lumi: bool = True
    staterror: bool = True


@dataclass(frozen=True)
class Channel:
    """A channel: bin edges (K + 1,) of the observable, its processes and the observed events'
    values (weight 1 each). Events outside the edges are dropped, in MC and data alike."""

    name: str
    edges: np.ndarray
    processes: tuple[Process, ...]
    observed: np.ndarray


def histogram(sample: Sample, edges: np.ndarray, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Per-bin sum of weights and ``sqrt(sum w^2)`` (each (K,)) of ``sample`` in ``edges``."""
    x = np.asarray(sample.values, dtype=float)
    w = np.ones_like(x) if sample.weights is None else np.asarray(sample.weights, dtype=float)
    if x.ndim != 1 or w.shape != x.shape or not (np.isfinite(x).all() and np.isfinite(w).all()):
        raise DataError(f"{where}: expected finite 1-D values and weights of equal length, got shapes "
                        f"{x.shape} and {w.shape}")
    return np.histogram(x, edges, weights=w)[0], np.sqrt(np.histogram(x, edges, weights=w * w)[0])


def binned_spec(channels: Sequence[Channel], poi: str = "mu", lumi_sigma: float | None = 0.02,
                lumi_bounds: tuple[float, float] = (0.5, 1.5), measurement: str = "hsbi") -> dict:
    """A pyhf workspace spec (JSON-like dict) of ``channels``: one sample per process with its
    modifiers, the observations and one measurement of ``poi`` (lumi constrained at 1 +- ``lumi_sigma``;
    None: no lumi modifier). Raises ConfigError for invalid edges, empty processes, non-positive
    variation yields or kappas, and a POI no process carries."""
    names = [ch.name for ch in channels]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"binned_spec: expected channels with distinct names, got {names}")
    if not any(p.normfactor == poi for ch in channels for p in ch.processes):
        raise ConfigError(f"binned_spec: no process carries the POI {poi!r} as its normfactor")
    spec_channels = [{"name": ch.name, "samples": [_sample_spec(ch, p, lumi_sigma is not None)
                                                   for p in ch.processes]} for ch in channels]
    observations = [{"name": ch.name, "data": histogram(Sample(ch.observed), _edges(ch),
                                                        f"channel {ch.name!r}, observed data")[0].tolist()}
                    for ch in channels]
    params = [] if lumi_sigma is None else [{"name": "lumi", "auxdata": [1.0], "sigmas": [float(lumi_sigma)],
                                              "bounds": [list(map(float, lumi_bounds))], "inits": [1.0]}]
    return {"channels": spec_channels, "observations": observations, "version": "1.0.0",
            "measurements": [{"name": measurement, "config": {"poi": poi, "parameters": params}}]}


def _edges(ch: Channel) -> np.ndarray:
    e = np.asarray(ch.edges, dtype=float)
    if e.ndim != 1 or len(e) < 2 or not np.isfinite(e).all() or not (np.diff(e) > 0).all():
        raise ConfigError(f"channel {ch.name!r}: expected bin edges as a 1-D strictly increasing array of "
                          f">= 2 finite values, got {np.array2string(e, threshold=8)}")
    return e


def _sample_spec(ch: Channel, proc: Process, lumi: bool) -> dict:
    where = f"channel {ch.name!r}, process {proc.name!r}"
    edges = _edges(ch)
    nom, err = histogram(proc.nominal, edges, f"{where}, nominal")
    total = nom.sum()
    if not (nom != 0).any() or not total > 0:
        raise ConfigError(f"{where}: the nominal content is {total:g} (zero in every bin or not positive); "
                          "expected a positive yield within the bin edges")
    mods: list[dict] = [] if proc.normfactor is None else [{"name": proc.normfactor, "type": "normfactor",
                                                              "data": None}]
    mods += [{"name": "lumi", "type": "lumi", "data": None}] if lumi and proc.lumi else []
    mods += [{"name": f"staterror_{ch.name}", "type": "staterror", "data": err.tolist()}] if proc.staterror else []
    for name, (lo, hi) in proc.normsys.items():
        if not (lo > 0 and hi > 0 and np.isfinite([lo, hi]).all()):
            raise ConfigError(f"{where}, normsys {name!r}: kappas (lo, hi) = ({lo:g}, {hi:g}); expected positive")
        mods.append({"name": name, "type": "normsys", "data": {"hi": float(hi), "lo": float(lo)}})
    for name, variations in proc.shapes.items():
        hists = []
        for side, var in zip(("down", "up"), variations):
            h = histogram(var, edges, f"{where}, NP {name!r} ({side})")[0]
            if not h.sum() > 0:
                raise ConfigError(f"{where}, NP {name!r}: the {side} variation's yield is {h.sum():g} "
                                  f"(nominal {total:g}); expected a positive yield")
            hists.append(h)
        (down, up), scale = hists, [total / h.sum() for h in hists]
        mods.append({"name": name, "type": "normsys", "data": {"hi": 1 / scale[1], "lo": 1 / scale[0]}})
        mods.append({"name": name, "type": "histosys", "data": {"hi_data": (up * scale[1]).tolist(),
                                                                  "lo_data": (down * scale[0]).tolist()}})
    return {"name": proc.name, "data": nom.tolist(), "modifiers": mods}


def log_odds(logp: np.ndarray, nu0: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """The learned observable of binned NSBI: per event the log odds of the processes carrying
    the POI against the others at the nominal point, ``log sum_{c in S} nu0_c p_c(x) -
    log sum_{c not in S} nu0_c p_c(x)``, from the nominal log ratios ``logp`` (n, C) (the
    reference density cancels). Monotone in the likelihood ratio of mu at the nominal point."""
    a = np.asarray(logp, dtype=float) + np.log(np.asarray(nu0, dtype=float) + 1e-300)
    signal = np.asarray(signal, dtype=bool)

    def lse(v: np.ndarray) -> np.ndarray:
        m = v.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(v - m).sum(axis=1, keepdims=True)))[:, 0]

    return lse(a[:, signal]) - lse(a[:, ~signal])


def nsbi_channel(name: str, observable, processes: Sequence[str], nominal: Sequence[tuple[np.ndarray, np.ndarray]],
                 data_x: np.ndarray, bins: int, normfactors: Sequence[str | None],
                 shapes: Mapping[tuple[int, str], tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]
                 | None = None, normsys: Mapping[tuple[int, str], tuple[float, float]] | None = None,
                 lumi: Sequence[bool] | None = None) -> Channel:
    """A binned channel of the learned ``observable`` (a function of events ``x`` (n, D)):
    ``bins`` bins of equal expected nominal content (weighted quantiles of all processes' nominal
    MC), the outer edges widened to hold every MC and data event; per process its nominal MC
    ``(x, w)``, its normplusshape variations ``shapes[(c, np)] = ((x, w) down, (x, w) up)``,
    normsys kappas ``normsys[(c, np)] = (lo, hi)``, its normfactor and whether lumi applies."""
    shapes, normsys = shapes or {}, normsys or {}
    values = [observable(x) for x, _ in nominal]
    weights = [np.asarray(w, dtype=float) for _, w in nominal]
    data = observable(data_x)
    v, w = np.concatenate(values), np.concatenate(weights)
    order = np.argsort(v)
    cum = np.cumsum(np.clip(w[order], 0, None))
    inner = np.interp(np.linspace(0, cum[-1], bins + 1)[1:-1], cum, v[order]) if cum[-1] > 0 and bins > 1 else []
    var_values = [observable(x) for pair in shapes.values() for x, _ in pair]
    every = [a for a in (v, data, *var_values) if len(a)]
    lo, hi = min(a.min() for a in every), max(a.max() for a in every)
    pad = 1e-9 * max(1.0, hi - lo)
    edges = np.unique(np.r_[lo - pad, inner, hi + pad])
    lumi = [True] * len(processes) if lumi is None else lumi
    procs = []
    for c, proc in enumerate(processes):
        own_shapes = {np_name: tuple(Sample(observable(x), w) for x, w in pair)
                      for (k, np_name), pair in shapes.items() if k == c}
        own_norms = {np_name: kappas for (k, np_name), kappas in normsys.items() if k == c}
        procs.append(Process(proc, Sample(values[c], weights[c]), own_shapes, own_norms, normfactors[c], lumi[c]))
    return Channel(name, edges, tuple(procs), data)


def hs3_spec(spec: Mapping, edges: Mapping[str, Sequence[float]], interpcodes: tuple[str, str] = ("code4", "code4p"),
             observable: str = "log_odds") -> dict:
    """The pyhf workspace ``spec`` in HS3's layout (what ROOT and ``pyhs3`` read): one
    ``histfactory_dist`` per channel (its ``edges``; samples with ``contents``/``errors``;
    ``normfactor``, ``normsys``, ``histosys`` with ``interpcodes``, Barlow-Beeston-lite
    ``staterror``), lumi as a ``normfactor`` with a ``gaussian_dist`` around its global
    observable (HS3 has no lumi modifier), binned observed data, one likelihood and an analysis
    of the POI."""
    meas = spec["measurements"][0]["config"]
    lumi = next((p for p in meas.get("parameters", []) if p["name"] == "lumi"), None)
    params = BinnedLikelihood.from_spec(spec, interpcodes).model.parameters
    dists, data, names = [], [], []
    for ch in sorted(spec["channels"], key=lambda c: c["name"]):
        axis = [{"name": f"{observable}_{ch['name']}", "edges": [float(e) for e in edges[ch["name"]]]}]
        samples = []
        for sample in ch["samples"]:
            mods, errors = [], None
            for mod in sample["modifiers"]:
                kind, name = mod["type"], mod["name"]
                if kind in ("normfactor", "lumi"):
                    mods.append({"type": "normfactor", "name": name, "parameter": name})
                elif kind == "normsys":
                    mods.append({"type": "normsys", "name": name, "parameter": name,
                                 "data": {**mod["data"], "interpolation": interpcodes[0]}})
                elif kind == "histosys":
                    mods.append({"type": "histosys", "name": name, "parameter": name, "data": {
                        "hi": {"contents": mod["data"]["hi_data"]}, "lo": {"contents": mod["data"]["lo_data"]},
                        "interpolation": interpcodes[1]}})
                elif kind == "staterror":
                    errors = mod["data"]
                    mods.append({"type": "staterror", "name": name,
                                 "parameters": [f"{name}[{i}]" for i in range(len(errors))]})
                else:
                    raise ConfigError(f"hs3_spec: channel {ch['name']!r}, sample {sample['name']!r}: modifier type "
                                      f"{kind!r} is not supported; expected normfactor, lumi, normsys, histosys, staterror")
            samples.append({"name": sample["name"], "modifiers": mods,
                            "data": {"contents": sample["data"], **({"errors": errors} if errors else {})}})
        dists.append({"name": f"model_{ch['name']}", "type": "histfactory_dist", "axes": axis, "samples": samples})
        obs = next(o for o in spec["observations"] if o["name"] == ch["name"])
        data.append({"name": f"obsData_{ch['name']}", "type": "binned", "contents": obs["data"], "axes": axis})
        names.append(ch["name"])
    aux = []
    if lumi is not None:
        dists.append({"name": "lumi_constraint", "type": "gaussian_dist", "x": "nom_lumi", "mean": "lumi",
                      "sigma": float(lumi["sigmas"][0])})
        aux.append("lumi_constraint")
    return {
        "metadata": {"hs3_version": "0.2", "packages": [{"name": "hsbi", "version": "binned export"}]},
        "distributions": dists,
        "data": data,
        "likelihoods": [{"name": "binned", "distributions": [f"model_{n}" for n in names],
                         "data": [f"obsData_{n}" for n in names], "aux_distributions": aux}],
        "parameter_points": [{"name": "default_values", "parameters": [
            {"name": p.name, "value": p.init} for p in params] + ([{"name": "nom_lumi", "value": 1.0}]
                                                                 if lumi is not None else [])}],
        "domains": [{"name": "default_domain", "type": "product_domain",
                     "axes": [{"name": p.name, "min": p.bounds[0], "max": p.bounds[1]} for p in params]}],
        "analyses": [{"name": "binned", "likelihood": "binned", "parameters_of_interest": [meas["poi"]],
                      "domains": ["default_domain"], "init": "default_values"}],
    }


# --- hsbi's binned likelihood -------------------------------------------------------------------

@dataclass(frozen=True)
class BinnedModel(ParameterSpace):
    """A workspace's parameters (POI first, then by name; staterror gammas ``name[i]``), its
    channels (pyhf's order) with their bin counts, and the global observables ``auxdata`` (P,)
    of the observed data (NaN for free parameters)."""

    parameters: tuple[Parameter, ...]
    poi: str
    channels: tuple[str, ...]
    nbins: tuple[int, ...]
    auxdata: tuple[float, ...]

    @property
    def nominal_aux(self) -> np.ndarray:
        """Global observables of the observed data: 0 for alphas, 1 for lumi and gammas (NaN: free)."""
        return np.array(self.auxdata, dtype=float)


@dataclass(frozen=True)
class BinnedData:
    """A batch of binned datasets: ``counts`` (B, total bins) and global observables ``aux`` (B, P)."""

    counts: np.ndarray
    aux: np.ndarray

    @property
    def batch(self) -> int:
        return len(self.counts)

    def take(self, rows: np.ndarray) -> BinnedData:
        return BinnedData(self.counts[rows], self.aux[rows])


@dataclass(frozen=True)
class BinnedLikelihood:
    """The HistFactory likelihood of a pyhf spec (a fitting :class:`~hsbi.inference.fitting.Likelihood`).

    Arrays over ``S`` samples (all channels), ``T`` bins, the ``G`` scalar parameters at positions
    ``glob`` of theta: nominal ``nom`` (S, T); factor type ``factor`` (S, G) (0 none, 1 linear:
    normfactor or lumi, 2 normsys) with ``log kappa`` ``log_lo``, ``log_hi`` (S, G); histosys
    deltas ``d_up = hi - nom``, ``d_dn = nom - lo`` (S, G, T); ``has_gamma`` (S,) and the gamma of
    each bin ``gamma_index`` (T,) (-1: none)."""

    model: BinnedModel
    codes: tuple[str, str]
    nom: np.ndarray
    glob: np.ndarray
    factor: np.ndarray
    log_lo: np.ndarray
    log_hi: np.ndarray
    d_up: np.ndarray
    d_dn: np.ndarray
    has_gamma: np.ndarray
    gamma_index: np.ndarray

    @classmethod
    def from_spec(cls, spec: Mapping, interpcodes: tuple[str, str] = ("code4", "code4p"),
                  measurement: str | None = None) -> BinnedLikelihood:
        """Read a pyhf workspace spec with normsys/histosys interpolation ``interpcodes``."""
        for code, allowed, mod in zip(interpcodes, _CODES, ("normsys", "histosys")):
            if code not in allowed:
                raise ConfigError(f"interpcodes: {mod} code {code!r} is not supported; expected one of {allowed}")
        channels = sorted(spec["channels"], key=lambda c: c["name"])
        nbins = [len(ch["samples"][0]["data"]) for ch in channels]
        start = np.cumsum([0, *nbins])
        samples = [(c, s) for c, ch in enumerate(channels) for s in ch["samples"]]
        sets = _paramsets(channels, samples)
        meas = _measurement(spec, measurement)
        params, aux = _parameters(sets, meas, _staterror_sigmas(sets, samples))
        model = BinnedModel(params, meas["config"]["poi"], tuple(ch["name"] for ch in channels), tuple(nbins),
                            tuple(aux))
        names = model.names
        glob = np.array([j for j, p in enumerate(params) if p.kind != "staterror"], dtype=np.int64)
        gpos = {names[j]: g for g, j in enumerate(glob)}
        S, G, T = len(samples), len(glob), int(start[-1])
        nom, factor = np.zeros((S, T)), np.zeros((S, G), dtype=np.int8)
        log_lo, log_hi, d_up, d_dn = np.zeros((S, G)), np.zeros((S, G)), np.zeros((S, G, T)), np.zeros((S, G, T))
        has_gamma, gamma_index = np.zeros(S, dtype=bool), np.full(T, -1, dtype=np.int64)
        for s, (c, smp) in enumerate(samples):
            cut = slice(start[c], start[c + 1])
            nom[s, cut] = smp["data"]
            for mod in smp["modifiers"]:
                kind, name = mod["type"], mod["name"]
                if kind == "staterror":
                    has_gamma[s] = True
                    gamma_index[cut] = [names.index(f"{name}[{i}]") for i in range(nbins[c])]
                elif kind in ("normfactor", "lumi"):
                    factor[s, gpos[name]] = 1
                elif kind == "normsys":
                    lo, hi = mod["data"]["lo"], mod["data"]["hi"]
                    if not (lo > 0 and hi > 0):
                        raise ConfigError(f"channel {channels[c]['name']!r}, sample {smp['name']!r}, normsys "
                                          f"{name!r}: kappas (lo, hi) = ({lo:g}, {hi:g}); expected positive")
                    factor[s, gpos[name]] = 2
                    log_lo[s, gpos[name]], log_hi[s, gpos[name]] = np.log(lo), np.log(hi)
                else:  # histosys
                    d_up[s, gpos[name], cut] = np.subtract(mod["data"]["hi_data"], smp["data"])
                    d_dn[s, gpos[name], cut] = np.subtract(smp["data"], mod["data"]["lo_data"])
        return cls(model, tuple(interpcodes), nom, glob, factor, log_lo, log_hi, d_up, d_dn, has_gamma,
                   gamma_index)

    def observed(self, spec: Mapping) -> BinnedData:
        """The spec's observations (batch 1) with the nominal global observables."""
        obs = {o["name"]: o["data"] for o in spec["observations"]}
        counts = np.concatenate([np.asarray(obs[name], dtype=float) for name in self.model.channels])
        return BinnedData(counts[None, :], self.model.nominal_aux[None, :])

    def expected(self, theta: np.ndarray) -> np.ndarray:
        """Expected counts (B, T) at ``theta`` (B, P)."""
        return self._jets(np.asarray(theta, dtype=float), order=0)[0]

    def nll_grad_hess(self, data: BinnedData, theta: np.ndarray, rows: np.ndarray | None = None,
                      hessian: bool = True, reference: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """NLL (B,), gradient (B, P) and Hessian (B, P, P) (None without ``hessian``) of datasets
        ``rows`` of ``data`` (all if None), one per row of ``theta`` (B, P); analytic, float64.
        ``reference`` is accepted for the protocol and ignored (there is one implementation)."""
        d = data if rows is None else data.take(np.asarray(rows, dtype=np.int64))
        theta = np.asarray(theta, dtype=float)
        n = np.asarray(d.counts, dtype=float)
        nu, J, Jg, K, Hgg = self._jets(theta, 2 if hessian else 1)
        ratio = np.divide(n, nu, out=np.zeros_like(nu), where=n != 0)
        w, c = 1.0 - ratio, np.divide(ratio, nu, out=np.zeros_like(nu), where=n != 0)
        value = (nu - xlogy(n, nu) + gammaln(n + 1)).sum(-1)
        B, P = theta.shape
        if n.shape[0] != B or P != len(self.model.parameters):
            raise DataError(f"nll_grad_hess: theta of shape {theta.shape} for {n.shape[0]} datasets; expected "
                            f"({n.shape[0]}, {len(self.model.parameters)})")
        grad = np.zeros((B, P))
        grad[:, self.glob] = np.einsum("bt,btg->bg", w, J)
        gb = self.gamma_index >= 0
        gi = self.gamma_index[gb]
        grad[:, gi] += (w * Jg)[:, gb]
        inv = np.nan_to_num(1.0 / self.model.sigmas)  # 0 for free parameters
        pull = (theta - np.nan_to_num(d.aux)) * inv
        value = value + 0.5 * (pull**2).sum(-1)
        grad += pull * inv
        if not hessian:
            return value, grad, None
        hess = np.zeros((B, P, P))
        hess[:, self.glob[:, None], self.glob[None, :]] = np.einsum("bt,btg,bth->bgh", c, J, J) + Hgg(w)
        cross = (c * Jg)[:, :, None] * J + w[:, :, None] * K  # (B, T, G)
        hess[:, self.glob[:, None], gi[None, :]] += cross[:, gb, :].transpose(0, 2, 1)
        hess[:, gi[:, None], self.glob[None, :]] += cross[:, gb, :]
        hess[:, gi, gi] += (c * Jg**2)[:, gb]
        hess[:, np.arange(P), np.arange(P)] += inv**2
        return value, grad, hess

    # nu_b = sum_s f_sb R_sb with R = A * Pf: A the additive part (nominal + histosys deltas), Pf the
    # product of the factors, f_sb the bin's gamma (where the sample has staterror, else 1)
    def _jets(self, theta: np.ndarray, order: int = 2) -> tuple:
        """nu (B, T); with ``order`` >= 1 its derivatives in the scalar parameters J (B, T, G), in
        the bin's gamma Jg (B, T), the mixed ones K (B, T, G); with ``order`` 2 also
        ``w -> sum_b w_b d2 nu_b / d theta_G^2`` (B, G, G)."""
        tg = theta[:, self.glob]
        m, m1, m2 = self._factors(tg)
        D, D1, D2 = self._deltas(tg)
        pv, pg, ph = _product_jet(m, m1, m2, order)
        av = self.nom[None] + D.sum(2)  # (B, S, T)
        gam = np.where(self.gamma_index >= 0, theta[:, np.maximum(self.gamma_index, 0)], 1.0)
        f = np.where(self.has_gamma[None, :, None], gam[:, None, :], 1.0)  # (B, S, T)
        rv = av * pv[:, :, None]
        nu = (f * rv).sum(1)
        if order == 0:
            return nu, None, None, None, None
        rg = D1.transpose(0, 1, 3, 2) * pv[:, :, None, None] + av[..., None] * pg[:, :, None, :]  # (B, S, T, G)
        J = np.einsum("bst,bstg->btg", f, rg)
        Jg = (self.has_gamma[None, :, None] * rv).sum(1)
        K = np.einsum("s,bstg->btg", self.has_gamma.astype(float), rg)

        def hess_gg(w: np.ndarray) -> np.ndarray:
            u = f * w[:, None, :]  # (B, S, T)
            cross = np.einsum("bst,bsjt,bsk->bjk", u, D1, pg)  # sum_sb u dA/dj dPf/dk
            out = np.einsum("bs,bsjk->bjk", (u * av).sum(-1), ph) + cross + cross.transpose(0, 2, 1)
            G = tg.shape[1]
            out[:, np.arange(G), np.arange(G)] += np.einsum("bst,bsgt,bs->bg", u, D2, pv)
            return out

        return nu, J, Jg, K, hess_gg if order == 2 else None

    def _factors(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each sample's multiplicative factor in each scalar parameter and its first and second
        derivatives (each (B, S, G)) at the scalar parameters ``a`` (B, G)."""
        a = np.broadcast_to(a[:, None, :], (len(a), *self.factor.shape))
        slope = np.where(a > 0 if self.codes[0] == "code1" else a >= 0, self.log_hi, -self.log_lo)
        ex = np.exp(a * slope)
        v, d1, d2 = ex, slope * ex, slope**2 * ex
        if self.codes[0] == "code4":
            coef, i = self._coef, np.arange(1, 7)
            ac = np.clip(a, -1.0, 1.0)[..., None]
            inside = np.abs(a) < 1.0
            v = np.where(inside, 1.0 + (coef * ac**i).sum(-1), v)
            d1 = np.where(inside, (coef * i * ac ** (i - 1)).sum(-1), d1)
            d2 = np.where(inside, (coef * i * (i - 1) * ac ** np.maximum(i - 2, 0)).sum(-1), d2)
        lin, sys = self.factor == 1, self.factor == 2
        return (np.where(lin, a, np.where(sys, v, 1.0)), np.where(lin, 1.0, np.where(sys, d1, 0.0)),
                np.where(sys, d2, 0.0))

    @cached_property
    def _coef(self) -> np.ndarray:
        """Code 4's polynomial coefficients (S, G, 6)."""
        return code4_coefficients(self.log_lo, self.log_hi)

    def _deltas(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Histosys deltas and their first and second derivatives (each (B, S, G, T))."""
        a = a[:, None, :, None]
        up = a > (0.0 if self.codes[1] == "code0" else 1.0)
        d1 = np.where(up, self.d_up, self.d_dn)
        if self.codes[1] == "code0":
            return a * d1, d1, np.zeros_like(d1)
        S, A = 0.5 * (self.d_up + self.d_dn), 0.0625 * (self.d_up - self.d_dn)
        inside = np.abs(a) <= 1.0
        a2 = a * a
        return (np.where(inside, a * S + A * a2 * (15 + a2 * (-10 + 3 * a2)), a * d1),
                np.where(inside, S + A * a * (30 + a2 * (-40 + 18 * a2)), d1),
                np.where(inside, A * (30 + a2 * (-120 + 90 * a2)), 0.0))


def _product_jet(m: np.ndarray, m1: np.ndarray, m2: np.ndarray, order: int
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``prod_g m_g`` (B, S) and, up to ``order``, its gradient (B, S, G) and Hessian (B, S, G, G),
    each factor ``m_g`` a function of parameter ``g`` alone (values, first, second derivatives (B, S, G))."""
    if order == 0:
        return np.prod(m, axis=-1), None, None
    B, S, G = m.shape
    v, g, h = np.ones((B, S)), np.zeros((B, S, G)), np.zeros((B, S, G, G)) if order == 2 else None
    for j in range(G):  # multiply by factor j: its gradient is along e_j only
        if h is not None:
            h *= m[..., j, None, None]
            h[..., j, :] += m1[..., j, None] * g
            h[..., :, j] += m1[..., j, None] * g
            h[..., j, j] += v * m2[..., j]
        g *= m[..., j, None]
        g[..., j] += v * m1[..., j]
        v = v * m[..., j]
    return v, g, h


def _paramsets(channels: list, samples: list) -> dict[str, tuple[str, int, int]]:
    """Each parameter set's name -> (kind, size, channel) from the samples' modifiers."""
    sets: dict[str, tuple[str, int, int]] = {}
    for c, smp in samples:
        seen = set()
        for mod in smp["modifiers"]:
            where = f"channel {channels[c]['name']!r}, sample {smp['name']!r}, modifier {mod['name']!r}"
            if mod["type"] not in _KINDS:
                raise ConfigError(f"{where}: modifier type {mod['type']!r} is not supported; expected one of "
                                  f"{sorted(_KINDS)}")
            if (mod["type"], mod["name"]) in seen:
                raise ConfigError(f"{where}: the sample has this {mod['type']} modifier twice; expected once")
            seen.add((mod["type"], mod["name"]))
            kind = _KINDS[mod["type"]]
            key = (kind, len(smp["data"]), c) if kind == "staterror" else (kind, 1, -1)
            if sets.setdefault(mod["name"], key) != key:
                raise ConfigError(f"{where}: the name is used by modifiers of another kind or channel "
                                  f"({sets[mod['name']][0]}); expected one parameter set per name")
    return sets


def _measurement(spec: Mapping, name: str | None) -> Mapping:
    found = [m for m in spec.get("measurements", []) if name is None or m["name"] == name]
    if not found:
        raise ConfigError(f"workspace: no measurement {name!r}; expected one of "
                          f"{[m['name'] for m in spec.get('measurements', [])]}")
    return found[0]


def _staterror_sigmas(sets: Mapping, samples: list) -> dict[str, np.ndarray]:
    """Per staterror set, the relative uncertainty per bin (pyhf's Barlow-Beeston lite)."""
    out = {}
    for name, (kind, size, c) in sets.items():
        if kind != "staterror":
            continue
        mods = [(np.asarray(s["data"], float), np.asarray(m["data"], float)) for ch, s in samples if ch == c
                for m in s["modifiers"] if m["type"] == "staterror" and m["name"] == name]
        total, err2 = sum(n for n, _ in mods), sum(e**2 for _, e in mods)
        out[name] = np.divide(np.sqrt(err2), total, out=np.zeros(size), where=total > 0)
    return out


def _parameters(sets: Mapping, meas: Mapping, relerr: Mapping[str, np.ndarray]
                ) -> tuple[tuple[Parameter, ...], list[float]]:
    """Parameters (POI first, then by name) with pyhf's defaults, the measurement's settings and
    the global observables (NaN: free)."""
    poi = meas["config"]["poi"]
    user = {p["name"]: p for p in meas["config"].get("parameters", [])}
    if poi not in sets or sets[poi][1] != 1:
        raise ConfigError(f"measurement {meas['name']!r}: POI {poi!r} is not a scalar parameter of the workspace")
    params, aux = [], []
    for name in [poi, *sorted(set(sets) - {poi})]:
        kind, size, _ = sets[name]
        cfg = user.get(name, {})
        if kind == "lumi" and "sigmas" not in cfg:
            raise ConfigError(f"measurement {meas['name']!r}: parameter {name!r} (lumi) has no 'sigmas'; "
                              "expected its relative uncertainty in the measurement's parameters")
        sig = relerr.get(name, np.ones(size))
        fixed = cfg.get("fixed", False)
        default = {"normfactor": ([1.0], [(0.0, 10.0)], [np.nan], [None]),
                   "alpha": ([0.0], [(-5.0, 5.0)], [0.0], [1.0]),
                   "lumi": ([1.0], [(0.5, 1.5)], [1.0], [None]),
                   "staterror": ([1.0] * size, [(1e-10, 10.0)] * size, [1.0] * size,
                                 [float(v) if v > 0 else 1.0 for v in sig])}[kind]
        inits, bounds, auxdata, sigmas = (cfg.get(k, d) for k, d in zip(("inits", "bounds", "auxdata", "sigmas"),
                                                                        default))
        for i in range(size):
            pname = name if kind != "staterror" else f"{name}[{i}]"
            params.append(Parameter(pname, kind, (float(bounds[i][0]), float(bounds[i][1])), float(inits[i]),
                                    None if sigmas[i] is None else float(sigmas[i]),
                                    bool(fixed) or (kind == "staterror" and not sig[i] > 0)))
            aux.append(np.nan if sigmas[i] is None else float(auxdata[i]))
    return tuple(params), aux


# --- pyhf's own fit --------------------------------------------------------------------------------

def pyhf_fit(spec: Mapping, interpcodes: tuple[str, str] = ("code4", "code4p"), level: float = 0.6827,
             measurement: str | None = None) -> dict:
    """pyhf's maximum-likelihood fit (numpy backend; MINUIT, and SLSQP from the same inits, the
    lower minimum kept, MINUIT's errors from there) of ``spec``'s observations and the
    profile-likelihood interval of the POI at ``level`` (crossings of ``2 Delta NLL`` with the
    chi2_1 quantile by brentq on pyhf's conditional fits): ``{"best_fit": {name: value},
    "uncertainties": {name: error}, "interval": [lo, hi], "twice_nll_min": float}``."""
    import pyhf

    previous = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=1e-6, strategy=2))
    try:
        return _pyhf_fit(pyhf, spec, interpcodes, level, measurement)
    except pyhf.exceptions.FailedMinimization as err:
        raise FitError(f"pyhf_fit: pyhf's MINUIT fit did not converge (NLL {err.result.fun / 2:.6g}); expected "
                       "a smooth minimum (check the NPs' variations and the interpolation codes)") from None
    finally:
        pyhf.set_backend(*previous)


def _pyhf_fit(pyhf: ModuleType, spec: Mapping, interpcodes: tuple[str, str], level: float,
              measurement: str | None) -> dict:
    ws = pyhf.Workspace(spec)
    model = ws.model(measurement_name=measurement, modifier_settings={
        "normsys": {"interpcode": interpcodes[0]}, "histosys": {"interpcode": interpcodes[1]}})
    data = ws.data(model)
    fitted, twice_min = pyhf.infer.mle.fit(data, model, return_uncertainties=True, return_fitted_val=True)
    # a second minimiser of pyhf's from the same inits: where the NLL has more than one minimum
    # (several histosys NPs at tens of bins) MINUIT may stop in a higher one; the lower stands
    minuit = pyhf.get_backend()[1]
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    try:
        other, other_min = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
    finally:
        pyhf.set_backend("numpy", minuit)
    minimiser = "minuit"
    if float(other_min) < float(twice_min) - 1e-6:  # MINUIT again from there, for its errors
        fitted, twice_min = pyhf.infer.mle.fit(data, model, init_pars=np.asarray(other).tolist(),
                                               return_uncertainties=True, return_fitted_val=True)
        minimiser = "minuit from scipy's minimum"
    best, errors, i = fitted[:, 0], fitted[:, 1], model.config.poi_index
    threshold = float(stats.chi2.ppf(level, 1))

    def excess(mu: float) -> float:
        start = best.copy()
        start[i] = mu
        return float(pyhf.infer.mle.fixed_poi_fit(mu, data, model, init_pars=start.tolist(),
                                                  return_fitted_val=True)[1]) - float(twice_min) - threshold

    interval = crossing_edges(excess, float(best[i]), float(errors[i]), model.config.suggested_bounds()[i])
    names = model.config.par_names
    return {"best_fit": dict(zip(names, best.tolist())), "uncertainties": dict(zip(names, errors.tolist())),
            "interval": list(interval), "twice_nll_min": float(twice_min), "minimiser": minimiser}
