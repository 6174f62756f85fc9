"""The declared model end to end: networks + ingested samples -> one likelihood object, the
observed (or Asimov / toy) dataset, and the observed fit with intervals, scan, pulls and impacts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hsbi.config.schema import AnalysisConfig
from hsbi.data.statmodel import Events, SampleStore
from hsbi.estimators import RatioNet
from hsbi.exceptions import DataError
from hsbi.inference.fitting import DeclaredLikelihood, fit_summary, level_key
from hsbi.inference.statmodel import (
    DTYPE,
    ChannelEvents,
    ChannelModel,
    Dataset,
    Normalisation,
    compile_model,
    process_terms,
    process_yields,
    shape_log_norm,
)
from hsbi.inference.toys import PoolChannel, ToyPool
from hsbi.training.statmodel import load_ratio, log_ratio

__all__ = ["Evaluator", "analyse", "belt_summary", "build", "check_data", "check_samples", "export_pyhf", "export_workspace",
           "load_nets",
           "neyman_grid", "neyman_point", "normalisation_samples", "observed_dataset", "prepare", "run_fit", "toy_pool"]

#: (channel, process, np, side) -> ensemble members
Nets = Mapping[tuple[str, str, str, str], Sequence[RatioNet]]


@dataclass(frozen=True)
class Evaluator:
    """Per-event terms of a channel from the networks: computed once per dataset."""

    channel: ChannelModel
    nets: Nets
    shape_names: tuple[str, ...]

    def nominal(self, x: np.ndarray) -> np.ndarray:
        """``logp`` (n, C): the processes' nominal log ratios at events ``x`` (n, D)."""
        ch, x32 = self.channel, np.ascontiguousarray(x, dtype=np.float32)
        logp = np.zeros((len(x), len(ch.processes)))
        for c, proc in enumerate(ch.processes):
            logp[:, c] = log_ratio(self.nets[(ch.name, proc, "", "")], x32)
        return logp

    def terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``logp`` (n, C), ``lo``, ``hi`` (n, C, S) at events ``x`` (n, D)."""
        ch, n = self.channel, len(x)
        C, S = len(ch.processes), len(self.shape_names)
        lo, hi = np.zeros((n, C, S)), np.zeros((n, C, S))
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        logp = self.nominal(x32)
        for c, proc in enumerate(ch.processes):
            for s, name in enumerate(self.shape_names):
                if ch.shape_mask[c, s]:
                    lo[:, c, s] = log_ratio(self.nets[(ch.name, proc, name, "down")], x32)
                    hi[:, c, s] = log_ratio(self.nets[(ch.name, proc, name, "up")], x32)
        return logp, lo, hi

    def normalisation(self, samples: Sequence[Events]) -> Normalisation:
        """The normalisation sample of the shape product from the processes' nominal ``samples``
        (see :meth:`Normalisation.offsets`: the ratios at alpha = +-1 are trusted to average 1)."""
        terms = [self.terms(s.x) for s in samples]
        ws = [s.w for s in samples]
        los = [t[1][:, c] for c, t in enumerate(terms)]
        his = [t[2][:, c] for c, t in enumerate(terms)]
        off_lo, off_hi = Normalisation.offsets(ws, los, his)
        return Normalisation.of(ws, [lo - o for lo, o in zip(los, off_lo)], [hi - o for hi, o in zip(his, off_hi)])

    def events(self, x: np.ndarray, w: np.ndarray) -> ChannelEvents:
        logp, lo, hi = self.terms(x)
        return ChannelEvents.of(w[None], logp[None], lo[None], hi[None])


def _subsample(ev: Events, n: int, seed: int) -> Events:
    if len(ev.w) <= n:
        return ev
    keep = np.sort(np.random.default_rng(seed).choice(len(ev.w), n, replace=False))
    return Events(ev.x[keep], ev.w[keep])


def build(cfg: AnalysisConfig, store: SampleStore, nets: Nets) -> tuple[DeclaredLikelihood, tuple[Evaluator, ...]]:
    """The likelihood object and per-channel evaluators: yields from the samples' weights (all
    splits), the normalisation samples from the test split of each process."""
    model = compile_model(cfg.statmodel, *store.yields())
    evaluators, norms = [], []
    for k, ch in enumerate(model.channels):
        ev = Evaluator(ch, nets, tuple(model.names[j] for j in ch.shape_index))
        evaluators.append(ev)
        norms.append(ev.normalisation(normalisation_samples(cfg, store, k)))
    return DeclaredLikelihood(model, tuple(norms)), tuple(evaluators)


def normalisation_samples(cfg: AnalysisConfig, store: SampleStore, channel: int) -> list[Events]:
    """Per process of a channel, the nominal events of its shape normalisation: up to
    ``statmodel.normalisation_events`` of the test split (a seeded subsample)."""
    ch_cfg, out = cfg.statmodel.channels[channel], []
    for c, proc in enumerate(ch_cfg.processes):
        sample = _subsample(store.process(ch_cfg, proc, "test"), cfg.statmodel.normalisation_events, c)
        if len(sample.w) == 0:  # a process without test events: nothing to renormalise with
            sample = Events(np.zeros((1, len(ch_cfg.features)), np.float32), np.ones(1))
        out.append(sample)
    return out


def check_samples(cfg: AnalysisConfig, dirs: Mapping[str, Sequence]) -> dict:
    """The ingested MC samples (``dirs``: sample name -> artifact directories) checked against
    the model before any network trains: event-aligned variations hold the nominal's events,
    every process has a positive expected yield and every variation a positive yield ratio.
    Returns the yields and yield ratios (down, up) by name."""
    store = SampleStore(cfg, dirs)
    nominal, ratios = store.yields()
    compile_model(cfg.statmodel, nominal, ratios)
    return {"yields": {"/".join(k): v for k, v in nominal.items()},
            "yield_ratios": {"/".join(k): list(v) for k, v in ratios.items()}}


def check_data(cfg: AnalysisConfig, dirs: Mapping[str, Sequence]) -> dict:
    """The channels' observed data samples have events (checked before any network trains);
    returns their events by channel (none for asimov / toy data)."""
    from hsbi.config.statmodel import GENERATED_DATA

    store = SampleStore(cfg, dirs)
    return {ch.name: len(store.data(ch).w) for ch in cfg.statmodel.channels if ch.data not in GENERATED_DATA}


def toy_pool(cfg: AnalysisConfig, evaluators: Sequence[Evaluator], store: SampleStore) -> ToyPool:
    """The toys' event pools: the test split of every process (held out of training), with the
    networks evaluated once on every event."""
    channels = []
    for ch_cfg, ev in zip(cfg.statmodel.channels, evaluators):
        samples = [store.process(ch_cfg, proc, "test") for proc in ch_cfg.processes]
        for proc, sample in zip(ch_cfg.processes, samples):
            if len(sample.w) == 0:
                raise DataError(f"statmodel channel {ch_cfg.name!r}, process {proc.name!r}: no test-split "
                                "events to throw toys from")
        logp, lo, hi = ev.terms(np.concatenate([s.x for s in samples]))
        channels.append(PoolChannel.of([s.w for s in samples], logp, lo, hi))
    return ToyPool(tuple(channels))


def _expected_events(lik: DeclaredLikelihood, ev: Evaluator, store: SampleStore, cfg: AnalysisConfig, ch_index: int,
                     theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Test-split MC of every process with weights giving the model's expectation at ``theta``:
    the process's events reweighted by its shape factors there, scaled to its expected yield
    ``nu_c(theta)`` (the shape product renormalised over the test split itself, so the dataset
    carries the model's yields exactly). Returns ``(x, w, per-process selection probabilities)``."""
    ch_cfg, ch = cfg.statmodel.channels[ch_index], lik.model.channels[ch_index]
    t = torch.as_tensor(theta[None], dtype=DTYPE)
    log_norm = shape_log_norm(ch, lik.norms[ch_index], t)
    F_all, logG = process_yields(ch, t)
    nu = (F_all * torch.exp(logG))[0].numpy()
    xs, ws, probs = [], [], []
    for c, proc in enumerate(ch_cfg.processes):
        sample = store.process(ch_cfg, proc, "test")
        if len(sample.w) == 0:
            probs.append(np.zeros(0))
            continue
        events = ev.events(sample.x, sample.w)
        F, q = process_terms(ch, events, t, log_norm)
        # each MC event carries its share of nu_c and the renormalised shape factor at theta
        factor = (F[0, c] * torch.exp(q[0, :, c] - events.logp[0, :, c])).numpy()
        w = sample.w * factor
        if w.sum() > 0:
            w = w * (nu[c] / w.sum())
        xs.append(sample.x), ws.append(w), probs.append(w / w.sum())
    return np.concatenate(xs), np.concatenate(ws), probs


def observed_dataset(cfg: AnalysisConfig, lik: DeclaredLikelihood, evaluators: Sequence[Evaluator],
                     store: SampleStore, seed: int) -> tuple[Dataset, dict]:
    """The channels' data (a data sample, ``asimov`` or ``toy`` at ``statmodel.truth``) and
    a summary (events per channel, kind)."""
    truth = lik.model.truth_point()
    rng = np.random.default_rng(seed)
    channels, summary, pool = [], {}, None
    for i, (ch_cfg, ev) in enumerate(zip(cfg.statmodel.channels, evaluators)):
        if ch_cfg.data == "toy":  # thrown as every toy is (the toy pool: Poisson counts, test-split
            # events drawn by their shape factors), with the global observables at their nominal values
            pool = pool or toy_pool(cfg, evaluators, store)
            events = pool.throw_channel(lik, i, truth, rng)
            w = events.w.numpy()[0]
        else:
            if ch_cfg.data == "asimov":
                x, w, _ = _expected_events(lik, ev, store, cfg, i, truth)
            else:
                data = store.data(ch_cfg)
                x, w = data.x, np.ones(len(data.w))
            events = ev.events(x, w)
        channels.append(events)
        summary[ch_cfg.name] = {"data": ch_cfg.data, "events": int(np.count_nonzero(w)), "sum_weights": float(np.sum(w))}
    aux = torch.as_tensor(lik.model.nominal_aux[None], dtype=DTYPE)
    return Dataset(tuple(channels), aux), summary


def analyse(cfg: AnalysisConfig, lik: DeclaredLikelihood, data: Dataset, log: Callable[[str], None] = print) -> dict:
    """Observed fit (MIGRAD, HESSE), MINOS on the POI, profile scan, pulls and impacts,
    correlations: a JSON-ready summary (:func:`hsbi.inference.fitting.fit_summary`, the one a
    portable workspace's fit gives too)."""
    torch.set_num_threads(1)  # small tensors: threads cost more than they give
    return fit_summary(lik, data, cfg.inference.levels, cfg.inference.scan_points, log)


def load_nets(members: Sequence[tuple[Mapping, object]]) -> dict:
    """TrainRatio artifacts ``(branch data, path)`` -> ``{(channel, process, np, side): [nets]}``."""
    nets: dict = {}
    for data, path in members:
        nets.setdefault((data["channel"], data["process"], data["np"], data["side"]), []).append(load_ratio(path))
    return nets


def prepare(cfg: AnalysisConfig, dirs: Mapping[str, Sequence], members: Sequence[tuple[Mapping, object]]
            ) -> tuple[DeclaredLikelihood, tuple[Evaluator, ...], SampleStore, Dataset, dict]:
    """The likelihood, evaluators, sample store and observed dataset (with its summary) of a
    declared model from ingested sample directories and TrainRatio artifacts."""
    store = SampleStore(cfg, dirs)
    lik, evaluators = build(cfg, store, load_nets(members))
    data, summary = observed_dataset(cfg, lik, evaluators, store, cfg.inference.observed_seed)
    return lik, evaluators, store, data, summary


def run_fit(cfg: AnalysisConfig, dirs: Mapping[str, Sequence], members: Sequence[tuple[Mapping, object]],
            out, log: Callable[[str], None] = print) -> dict:
    """Build the likelihood, the observed dataset and the fit; write result.json and plots
    into ``out``; return the summary."""
    import json

    from hsbi.plotting.statmodel import plot_fit

    lik, _, _, data, summary = prepare(cfg, dirs, members)
    log(f"data: {json.dumps(summary)}")
    result = {**analyse(cfg, lik, data, log), "data": summary,
              "yields": {f"{ch.name}/{p}": float(ch.nu0[c]) for ch in lik.model.channels for c, p in enumerate(ch.processes)}}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_fit(out, result)
    return result


def export_workspace(cfg: AnalysisConfig, dirs: Mapping[str, Sequence], members: Sequence[tuple[Mapping, object]],
                     out, log: Callable[[str], None] = print) -> dict:
    """The declared model with its observed dataset as a portable workspace in ``out``
    (:mod:`hsbi.inference.workspace`): the compiled model, the normalisation samples' and the
    data's per-event terms, every network as ONNX (one file per member) and the data's features
    where they come from a data sample. Returns a summary (files, sizes)."""
    from hsbi.config.statmodel import GENERATED_DATA
    from hsbi.estimators.io import onnx_bytes
    from hsbi.inference.workspace import write_workspace

    lik, evaluators, store, data, summary = prepare(cfg, dirs, members)
    nets = dict(evaluators[0].nets) if evaluators else {}  # one mapping serves every channel
    log(f"workspace: {sum(map(len, nets.values()))} networks to ONNX")
    networks = {key: [onnx_bytes(net) for net in group] for key, group in nets.items()}
    events = {ch.name: {"data": store.data(ch).x} for ch in cfg.statmodel.channels if ch.data not in GENERATED_DATA}
    path = write_workspace(out, lik, data, levels=cfg.inference.levels, scan_points=cfg.inference.scan_points,
                           networks=networks, events=events, description=f"{cfg.name}: {json.dumps(summary)}")
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {"workspace": str(path.relative_to(out)), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "networks": sum(map(len, networks.values())), "data": summary}


def export_pyhf(cfg: AnalysisConfig, dirs: Mapping[str, Sequence], members: Sequence[tuple[Mapping, object]],
                fit_result: Mapping, out, bins: int, log: Callable[[str], None] = print) -> dict:
    """Binned NSBI of the declared model as a pyhf workspace in ``out``
    (``pyhf_workspace.json``, and the same in HS3's layout, ``hs3_workspace.json``): per channel ``bins`` bins of the learned log odds of the processes
    carrying the POI against the others (:func:`hsbi.inference.binned.log_odds`, from the
    nominal ratio networks), the processes' nominal MC (all splits) with ``staterror``, normsys
    kappas, the normplusshape variations' samples as ``normsys`` + ``histosys``, ``lumi``, and the
    observed data. pyhf fits it (its schema validated first) and hsbi fits it with its own binned
    likelihood; returns both, the agreement, and the unbinned interval of ``fit_result`` beside
    them."""
    import pyhf

    from hsbi.config.statmodel import GENERATED_DATA
    from hsbi.inference.binned import (
        BinnedLikelihood,
        binned_spec,
        hs3_spec,
        log_odds,
        nsbi_channel,
        pyhf_fit,
    )
    from hsbi.inference.fitting import fit, profile_interval, profile_scan

    store, nets = SampleStore(cfg, dirs), load_nets(members)
    model = compile_model(cfg.statmodel, *store.yields())  # the nominal networks only: no normalisation
    poi = model.poi
    channels = []
    for ch_cfg, ch in zip(cfg.statmodel.channels, model.channels):
        ev = Evaluator(ch, nets, ())
        where = f"statmodel channel {ch.name!r}"
        if ch_cfg.data in GENERATED_DATA:
            raise DataError(f"{where}: data is {ch_cfg.data!r}; ExportPyhf bins observed events: expected a data sample")
        signal = ch.normfactors[:, model.poi_index] > 0
        if signal.all() or not signal.any():
            raise DataError(f"{where}: the binned observable is the log odds of the processes carrying {poi!r} "
                            "against the others; expected both kinds of process in the channel")
        normfactors = []
        for c in range(len(ch.processes)):
            names = [model.names[j] for j in np.flatnonzero(ch.normfactors[c])]
            if len(names) > 1:
                raise DataError(f"{where}, process {ch.processes[c]!r}: normfactors {names}; a binned sample "
                                "carries at most one")
            normfactors.append(names[0] if names else None)
        observable = lambda x, ev=ev, ch=ch, signal=signal: log_odds(ev.nominal(x), ch.nu0, signal)
        nominal, shapes, normsys = [], {}, {}
        for c, proc in enumerate(ch_cfg.processes):
            events = store.process(ch_cfg, proc, None)
            nominal.append((events.x, events.w))
            for mod in proc.modifiers:
                if mod.type == "normsys":
                    normsys[(c, mod.name)] = (mod.lo, mod.hi)
                elif mod.type == "normplusshape":
                    shapes[(c, mod.name)] = tuple((v.x, v.w) for v in (store.variation(ch_cfg, proc, mod, side, None)
                                                                          for side in ("down", "up")))
        log(f"binned: channel {ch.name}, {bins} bins of the learned log odds")
        channels.append(nsbi_channel(ch.name, observable, ch.processes, nominal, store.data(ch_cfg).x, bins,
                                     normfactors, shapes, normsys, [bool(ch.lumi[c] >= 0) for c in range(len(ch.processes))]))
    lumi = [p for p in model.parameters if p.kind == "lumi"]
    spec = binned_spec(channels, poi, lumi[0].sigma if lumi else None)
    pyhf.Workspace(spec)  # pyhf's JSON schema
    out.mkdir(parents=True, exist_ok=True)
    (out / "pyhf_workspace.json").write_text(json.dumps(spec, indent=1) + "\n")
    (out / "hs3_workspace.json").write_text(json.dumps(hs3_spec(spec, {ch.name: ch.edges for ch in channels}),
                                                       indent=1) + "\n")
    binned = BinnedLikelihood.from_spec(spec)
    bdata = binned.observed(spec)
    best = fit(binned, bdata)
    ours, theirs = {}, {}
    for level in cfg.inference.levels:
        log(f"binned: {level_key(level)}% intervals (hsbi, pyhf)")
        ours[level_key(level)] = list(profile_interval(binned, bdata, level, best))
        ref = pyhf_fit(spec, level=level)  # pyhf's own fit and interval (its best fit the same at every level)
        theirs[level_key(level)] = ref["interval"]
    unbinned = fit_result["intervals"]["minos"]
    # the binned t(mu) over both intervals (the unbinned scan beside it has its own grid)
    edges_all = [e for iv in (*ours.values(), *unbinned.values()) for e in iv]
    pad = 0.15 * (max(edges_all) - min(edges_all))
    bounds = binned.model.parameters[binned.model.poi_index].bounds
    grid = np.linspace(max(bounds[0], min(edges_all) - pad), min(bounds[1], max(edges_all) + pad), 41)
    scan = profile_scan(binned, bdata, grid, best)
    width = lambda iv: iv[1] - iv[0]
    return {
        "poi": poi, "bins": bins, "interpcodes": ["code4", "code4p"],
        "edges": {ch.name: ch.edges.tolist() for ch in channels},
        "hsbi_binned": {"best_fit": dict(zip(binned.model.names, map(float, best.values))), "valid": best.valid,
                        "intervals": ours},
        "pyhf": {"best_fit": ref["best_fit"], "intervals": theirs},
        "difference": {"best_fit": abs(best[poi] - ref["best_fit"][poi]),
                       "edges": max(abs(a - b) for k in ours for a, b in zip(ours[k], theirs[k]))},
        "unbinned": {"best_fit": fit_result["best_fit"][poi], "intervals": unbinned},
        "width_ratio": {k: width(unbinned[k]) / width(ours[k]) for k in ours if k in unbinned},
        "scan": {"values": scan.values.tolist(), "t": scan.t.tolist()},
    }


def neyman_grid(cfg: AnalysisConfig, fit_result: Mapping) -> np.ndarray:
    """The belt's grid of the POI for a declared model: ``inference.neyman.points`` points over
    ``mu_hat +- (sqrt(chi2_1^-1(max level)) + 3) sigma`` within the POI's bounds, rounded to 4
    significant digits; ``sigma`` is the larger of the observed fit's HESSE error and the width
    its MINOS intervals imply (a POI on a bound has a one-sided interval and may have no HESSE
    error). A 95% interval is cut by such a grid with probability P(|Z| > 3) = 0.27%, asymptotically."""
    from scipy import stats

    poi = fit_result["poi"]
    implied = [(hi - lo) / (2 * math.sqrt(stats.chi2.ppf(float(level) / 100, 1)))
               for level, (lo, hi) in fit_result["intervals"]["minos"].items()]
    sigma = max([fit_result["errors"][poi], *implied])
    if not (math.isfinite(sigma) and sigma > 0):
        raise DataError(f"statmodel: the observed fit gives no width of {poi!r} (HESSE error "
                        f"{fit_result['errors'][poi]:g}, MINOS {fit_result['intervals']['minos']}); "
                        "expected a positive width to size the Neyman grid")
    mu = fit_result["best_fit"][poi]
    half = (math.sqrt(stats.chi2.ppf(max(cfg.inference.levels), 1)) + 3.0) * sigma
    bounds = fit_result["bounds"][poi]
    lo, hi = max(bounds[0], float(f"{mu - half:.4g}")), min(bounds[1], float(f"{mu + half:.4g}"))
    return np.linspace(lo, hi, cfg.inference.neyman.points)


def neyman_point(cfg: AnalysisConfig, dirs: Mapping[str, Sequence], members: Sequence[tuple[Mapping, object]],
                 fit_result: Mapping, point: int, log: Callable[[str], None] = print) -> dict:
    """One point of the belt (the profile construction): ``t(mu)`` of the observed data and of
    ``inference.neyman.toys`` toys thrown at the observed conditional MLE of every NP, with their
    global observables drawn; failed fits are ``t = +inf``."""
    from hsbi.inference.toys import t_statistic, toy_t

    torch.set_num_threads(1)
    lik, evaluators, store, data, _ = prepare(cfg, dirs, members)
    pool = toy_pool(cfg, evaluators, store)
    mu = float(neyman_grid(cfg, fit_result)[point])
    start = lik.model.point({**fit_result["best_fit"], lik.model.poi: mu})[None]
    obs = t_statistic(lik, data, mu, start)
    neyman = cfg.inference.neyman
    log(f"belt point {point}: {lik.model.poi} = {mu:.4g}, t_obs = {obs.t[0]:.4g}; {neyman.toys} toys")
    ref = toy_t(lik, pool, obs.theta_hat_hat[0], neyman.toys, seed=neyman.seed * 1000 + point, log=log)
    return {"point": point, "mu": mu, "t_observed": float(obs.t[0]), "observed_failed": bool(obs.failed[0]),
            "theta_hat_hat": dict(zip(lik.model.names, map(float, obs.theta_hat_hat[0]))),
            "t": ref.t.tolist(), "failed": int(ref.failed.sum()), "toys": len(ref.t)}


def declared_coverage(cfg: AnalysisConfig, dirs: Mapping[str, Sequence], members: Sequence[tuple[Mapping, object]],
                      log: Callable[[str], None] = print) -> tuple[dict, np.ndarray]:
    """Coverage at ``statmodel.truth`` from toys of the model: ``inference.coverage.datasets``
    datasets (Poisson counts of the yields, events resampled from the held-out pools reweighted
    by the shape factors, global observables drawn) with ``t(mu_true)`` each, and twice as many
    independent reference toys at the same point for the Neyman critical values. Per level: the
    Neyman coverage (the construction's own check: toys, fits and quantiles) and the Wilks
    coverage (the asymptotic intervals, MINOS's), with binomial errors; failed fits count as
    ``t = +inf``; the mean width of the Wilks interval at the first level over
    ``inference.coverage.width_datasets`` datasets of their own (batched, MINOS's edges). Returns
    the summary and the datasets' ``t``."""
    from hsbi.inference.toys import coverage, toy_t, wilks_intervals

    torch.set_num_threads(1)
    lik, evaluators, store, _, _ = prepare(cfg, dirs, members)
    pool = toy_pool(cfg, evaluators, store)
    model, truth = lik.model, lik.model.truth_point()
    n, seed = cfg.inference.coverage.datasets, cfg.inference.coverage.seed
    point = dict(zip(model.names, map(float, truth)))
    log(f"coverage at {model.poi} = {point[model.poi]:.4g}: {n} datasets, {2 * n} reference toys")
    datasets = toy_t(lik, pool, truth, n, seed, log=log)
    reference = toy_t(lik, pool, truth, 2 * n, seed + 1, log=log)
    levels = {level_key(lv): coverage(datasets.t, reference.t, lv) for lv in cfg.inference.levels}
    for k, c in levels.items():
        log(f"coverage {k}%: Neyman {c['coverage']:.3f} +- {c['error']:.3f}, Wilks {c['wilks_coverage']:.3f} "
            f"+- {c['wilks_error']:.3f}")
    summary = {"poi": model.poi, "truth": point, "datasets": n, "reference_toys": 2 * n, "levels": levels}
    n_width = cfg.inference.coverage.width_datasets
    if n_width:  # datasets of their own (seed + 2), thrown as the others
        level = cfg.inference.levels[0]
        toys = pool.throw(lik, np.tile(truth, (n_width, 1)), np.random.default_rng(seed + 2))
        edges = wilks_intervals(lik, toys, level, np.tile(truth, (n_width, 1)))
        widths = (edges[:, 1] - edges[:, 0])[np.isfinite(edges).all(1)]
        summary["mean_width"] = {level_key(level): float(widths.mean()) if len(widths) else None,
                                 "error": float(widths.std(ddof=1) / np.sqrt(len(widths))) if len(widths) > 1 else None,
                                 "datasets": len(widths), "failed": n_width - len(widths)}
        log(f"mean Wilks width {level_key(level)}%: {summary['mean_width'][level_key(level)]} over {len(widths)} datasets")
    return summary, datasets.t


def belt_summary(cfg: AnalysisConfig, points: Sequence[Mapping], fit_result: Mapping) -> dict:
    """The belt of all points: critical values per level, failed toys, the Neyman intervals
    (edges interpolated, truncation flagged) beside the MINOS intervals of the observed fit."""
    from hsbi.inference.toys import Belt, critical_value

    points = sorted(points, key=lambda p: p["point"])
    levels = cfg.inference.levels
    belt = Belt(np.array([p["mu"] for p in points]), np.array([p["t_observed"] for p in points]),
                {lv: np.array([critical_value(np.array(p["t"]), lv) for p in points]) for lv in levels},
                np.array([p["failed"] for p in points]), min(p["toys"] for p in points))
    intervals = {level_key(lv): dict(zip(("low", "high", "truncated"), belt.interval(lv))) for lv in levels}
    return {"poi": fit_result["poi"], "grid": belt.grid.tolist(), "t_observed": belt.t_observed.tolist(),
            "critical": {level_key(lv): v.tolist() for lv, v in belt.critical.items()},
            "failed": belt.failed.tolist(), "toys": belt.toys, "intervals": intervals,
            "minos": fit_result["intervals"]["minos"],
            "observed_failed": [p["observed_failed"] for p in points]}
