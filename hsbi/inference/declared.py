"""The declared model end to end: networks + ingested samples -> one likelihood object, the
observed (or Asimov / toy) dataset, and the observed fit with intervals, scan, pulls and impacts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hsbi.config.schema import AnalysisConfig
from hsbi.data.statmodel import Events, SampleStore
from hsbi.estimators import RatioNet
from hsbi.inference.fitting import Likelihood, fit, impacts, minos_intervals, profile_scan
from hsbi.inference.statmodel import (
    DTYPE,
    ChannelEvents,
    ChannelModel,
    Dataset,
    Normalisation,
    compile_model,
    process_terms,
    shape_log_norm,
)
from hsbi.training.statmodel import load_ratio, log_ratio

__all__ = ["Evaluator", "analyse", "build", "load_nets", "observed_dataset", "run_fit"]

#: (channel, process, np, side) -> ensemble members
Nets = Mapping[tuple[str, str, str, str], Sequence[RatioNet]]


@dataclass(frozen=True)
class Evaluator:
    """Per-event terms of a channel from the networks: computed once per dataset."""

    channel: ChannelModel
    nets: Nets
    shape_names: tuple[str, ...]

    def terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``logp`` (n, C), ``lo``, ``hi`` (n, C, S) at events ``x`` (n, D)."""
        ch, n = self.channel, len(x)
        C, S = len(ch.processes), len(self.shape_names)
        logp, lo, hi = np.zeros((n, C)), np.zeros((n, C, S)), np.zeros((n, C, S))
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        for c, proc in enumerate(ch.processes):
            logp[:, c] = log_ratio(self.nets[(ch.name, proc, "", "")], x32)
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


def build(cfg: AnalysisConfig, store: SampleStore, nets: Nets) -> tuple[Likelihood, tuple[Evaluator, ...]]:
    """The likelihood object and per-channel evaluators: yields from the samples' weights (all
    splits), the normalisation samples from the test split of each process."""
    model = compile_model(cfg.statmodel, *store.yields())
    evaluators, norms = [], []
    for ch_cfg, ch in zip(cfg.statmodel.channels, model.channels):
        names = tuple(model.names[j] for j in ch.shape_index)
        samples = []
        for c, proc in enumerate(ch_cfg.processes):
            sample = _subsample(store.process(ch_cfg, proc, "test"), cfg.statmodel.normalisation_events, c)
            if len(sample.w) == 0:  # a process without test events: nothing to renormalise with
                sample = Events(np.zeros((1, len(ch.features)), np.float32), np.ones(1))
            samples.append(sample)
        ev = Evaluator(ch, nets, names)
        evaluators.append(ev)
        norms.append(ev.normalisation(samples))
    return Likelihood(model, tuple(norms)), tuple(evaluators)


def _expected_events(lik: Likelihood, ev: Evaluator, store: SampleStore, cfg: AnalysisConfig, ch_index: int,
                     theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Test-split MC of every process with weights giving the model's expectation at ``theta``:
    ``(x, w, per-process selection probabilities)``."""
    ch_cfg, ch = cfg.statmodel.channels[ch_index], lik.model.channels[ch_index]
    t = torch.as_tensor(theta[None], dtype=DTYPE)
    log_norm = shape_log_norm(ch, lik.norms[ch_index], t)
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
        w = sample.w / sample.total * factor
        xs.append(sample.x), ws.append(w), probs.append(w / w.sum())
    return np.concatenate(xs), np.concatenate(ws), probs


def observed_dataset(cfg: AnalysisConfig, lik: Likelihood, evaluators: Sequence[Evaluator],
                     store: SampleStore, seed: int) -> tuple[Dataset, dict]:
    """The channels' data (a data sample, ``asimov`` or ``toy`` at ``statmodel.truth``) and
    a summary (events per channel, kind)."""
    truth = lik.model.truth_point()
    rng = np.random.default_rng(seed)
    channels, summary = [], {}
    for i, (ch_cfg, ev) in enumerate(zip(cfg.statmodel.channels, evaluators)):
        if ch_cfg.data == "asimov":
            x, w, _ = _expected_events(lik, ev, store, cfg, i, truth)
        elif ch_cfg.data == "toy":
            x_all, w_all, _ = _expected_events(lik, ev, store, cfg, i, truth)
            n = rng.poisson(w_all.sum())
            x = x_all[rng.choice(len(w_all), n, p=w_all / w_all.sum())]
            w = np.ones(n)
        else:
            data = store.data(ch_cfg)
            x, w = data.x, np.ones(len(data.w))
        channels.append(ev.events(x, w))
        summary[ch_cfg.name] = {"data": ch_cfg.data, "events": len(x), "sum_weights": float(np.sum(w))}
    aux = torch.as_tensor(lik.model.nominal_aux[None], dtype=DTYPE)
    return Dataset(tuple(channels), aux), summary


def analyse(cfg: AnalysisConfig, lik: Likelihood, data: Dataset, log: Callable[[str], None] = print) -> dict:
    """Observed fit (MIGRAD, HESSE), MINOS on the POI, profile scan, pulls and impacts,
    correlations: a JSON-ready summary."""
    model, levels = lik.model, cfg.inference.levels
    torch.set_num_threads(1)  # small tensors: threads cost more than they give
    log(f"fit: {len(model.names)} parameters")
    best = fit(lik, data)
    log(f"fit: {model.poi} = {best[model.poi]:.4g} +- {best.error(model.poi):.3g} (valid: {best.valid}); MINOS")
    minos = minos_intervals(lik, data, levels, best)
    lo = min(v[0] for v in minos.values())
    hi = max(v[1] for v in minos.values())
    pad = 0.15 * (hi - lo)
    bounds = model.parameters[model.poi_index].bounds
    grid = np.linspace(max(bounds[0], lo - pad), min(bounds[1], hi + pad), min(41, cfg.inference.scan_points))
    log(f"scan: {len(grid)} points")
    scan = profile_scan(lik, data, grid, best)
    log(f"impacts: {sum(p.constrained for p in model.parameters)} NPs")
    ranked = impacts(lik, data, best)
    key = lambda level: f"{100 * level:.4g}".rstrip("0").rstrip(".")
    return {
        "poi": model.poi,
        "parameters": list(model.names),
        "best_fit": dict(zip(model.names, map(float, best.values))),
        "errors": dict(zip(model.names, map(float, best.errors))),
        "nll_min": best.nll,
        "valid": best.valid,
        "intervals": {"minos": {key(l): [v[0], v[1]] for l, v in minos.items()},
                      "minos_valid": {key(l): v[2] for l, v in minos.items()},
                      "scan": {key(l): list(scan.interval(l)) for l in levels}},
        "scan": {"values": scan.values.tolist(), "t": scan.t.tolist()},
        "impacts": [{"name": i.name, "pull": i.pull, "constraint": i.constraint, "prefit": list(i.prefit),
                     "postfit": list(i.postfit)} for i in ranked],
        "correlation": best.correlation.tolist() if best.correlation is not None else None,
    }


def load_nets(members: Sequence[tuple[Mapping, object]]) -> dict:
    """TrainRatio artifacts ``(branch data, path)`` -> ``{(channel, process, np, side): [nets]}``."""
    nets: dict = {}
    for data, path in members:
        nets.setdefault((data["channel"], data["process"], data["np"], data["side"]), []).append(load_ratio(path))
    return nets


def run_fit(cfg: AnalysisConfig, dirs: Mapping[str, Sequence], members: Sequence[tuple[Mapping, object]],
            out, log: Callable[[str], None] = print) -> dict:
    """Build the likelihood, the observed dataset and the fit; write result.json and plots
    into ``out``; return the summary."""
    import json

    from hsbi.plotting.statmodel import plot_fit

    store = SampleStore(cfg, dirs)
    lik, evaluators = build(cfg, store, load_nets(members))
    data, summary = observed_dataset(cfg, lik, evaluators, store, cfg.inference.observed_seed)
    log(f"data: {json.dumps(summary)}")
    result = {**analyse(cfg, lik, data, log), "data": summary,
              "yields": {f"{ch.name}/{p}": float(ch.nu0[c]) for ch in lik.model.channels for c, p in enumerate(ch.processes)}}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_fit(out, result)
    return result
