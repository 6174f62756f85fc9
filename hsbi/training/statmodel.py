"""Networks of the declared model: a nominal ratio per process and a shape ratio per (process,
NP, direction), each a weighted classifier trained with Lightning.

A classifier between a numerator sample and a denominator sample, each class's weights scaled
to a mean of 1 (balanced classes), has the logit ``log p_num(x) / p_den(x)``: for the nominal
ratio the numerator is process ``c`` and the denominator the equal mixture of the channel's
processes (the reference cancels in every likelihood ratio); for a shape ratio the numerator is
the varied sample and the denominator the nominal one, so ``logit = log r^+-(x)``. Closure of a
shape network: the nominal reweighted by ``r`` against the varied sample, per feature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hsbi.config import EstimatorConfig, TrainingConfig
from hsbi.config.schema import AnalysisConfig
from hsbi.data.statmodel import Events, SampleStore
from hsbi.diagnostics.closure import closure_chi2
from hsbi.estimators import RatioNet
from hsbi.exceptions import DataError
from hsbi.training.fit import EstimatorModule, fit_per_process
from hsbi.training.lre import loaders

__all__ = ["WeightedClassifier", "closure", "load_ratio", "log_ratio", "ratio_samples", "train_member", "train_ratio"]


class WeightedClassifier(EstimatorModule):
    """Binary cross-entropy on logits with per-event weights (mean 1 per class)."""

    def loss_of(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        inputs, target, weight = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self.net(inputs), target, reduction="none")
        return (loss * weight).mean()


def _classes(num: Events, den: Events) -> tuple[torch.Tensor, ...]:
    """Inputs, targets and class-balanced weights of the two samples."""
    for name, ev in (("numerator", num), ("denominator", den)):
        if len(ev.w) == 0 or not ev.total > 0:
            raise DataError(f"the {name} sample has no events or a non-positive total weight "
                            f"({len(ev.w)} events, total {ev.total:g}); expected events with positive total weight")
    x = np.concatenate([num.x, den.x]).astype(np.float32)
    y = np.concatenate([np.ones(len(num.w)), np.zeros(len(den.w))]).astype(np.float32)
    half = 0.5 * len(x)  # each class's weights sum to half the rows: balanced, mean weight 1
    w = np.concatenate([num.w * half / num.total, den.w * half / den.total])
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w.astype(np.float32))


def _reference(parts: Sequence[Events]) -> Events:
    """The equal mixture of the processes (each scaled to total weight 1)."""
    return Events.concat([Events(p.x, p.w / p.total) for p in parts if p.total > 0])


def ratio_samples(store: SampleStore, cfg: AnalysisConfig, task: dict, split: str) -> tuple[Events, Events]:
    """``(numerator, denominator)`` of one network (``task`` from
    :func:`hsbi.data.statmodel.ratio_tasks`) in ``split``."""
    ch = next(c for c in cfg.statmodel.channels if c.name == task["channel"])
    proc = next(p for p in ch.processes if p.name == task["process"])
    if not task["np"]:
        return store.process(ch, proc, split), _reference([store.process(ch, p, split) for p in ch.processes])
    mod = next(m for m in proc.modifiers if m.name == task["np"] and m.type == "normplusshape")
    return store.variation(ch, proc, mod, task["side"], split), store.process(ch, proc, split)


def train_ratio(train: tuple[Events, Events], val: tuple[Events, Events], estimator: EstimatorConfig,
                training: TrainingConfig, seed: int, label: str, log: Callable[[str], None] = print,
                log_dir: Path | None = None) -> tuple[RatioNet, list[dict[str, float]]]:
    """One weighted classifier ``log p_num / p_den`` with its per-epoch metrics."""
    tr, va = _classes(*train), _classes(*val)

    def build(_: str) -> tuple[RatioNet, WeightedClassifier, object, object]:
        net = RatioNet(tr[0].shape[1], estimator.widths, estimator.activation, n_nuisances=0)
        net.set_standardisation(tr[0])
        return (net, WeightedClassifier(net, training), *loaders(tr, va, training, seed))

    nets, history = fit_per_process(("ratio",), training, seed, label, log, build, log_dir)
    return nets["ratio"], history["ratio"]


def log_ratio(nets: Sequence[RatioNet], x: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """The members' mean logit at ``x`` (n, D): float64 (n,)."""
    out = np.zeros(len(x))
    with torch.inference_mode():
        for i in range(0, len(x), chunk):
            block = torch.as_tensor(x[i : i + chunk], dtype=torch.float32)
            out[i : i + chunk] = np.mean([net(block).double().numpy() for net in nets], axis=0)
    return out


def closure(nets: Sequence[RatioNet], num: Events, den: Events, bins: int = 20) -> dict[str, list]:
    """The denominator reweighted by ``exp(logit)`` against the (weighted) numerator, per feature
    (:func:`hsbi.diagnostics.closure.closure_chi2`), and the same without reweighting for scale."""
    r = np.exp(log_ratio(nets, den.x.astype(np.float32)))
    return {key: closure_chi2(num.x, den.x, den.w * factor, bins, numerator_weights=num.w)
            for key, factor in (("reweighted", r), ("nominal", 1.0))}


def train_member(cfg: AnalysisConfig, dirs: dict[str, list], task: dict, out: Path, label: str,
                 log: Callable[[str], None] = print) -> dict:
    """Train the network of one TrainRatio branch into ``out`` (``weights.safetensors``,
    ``estimator.json``, ``logs/``); returns its report (history and, for shape ratios, closure)."""
    from hsbi.estimators.io import save_nets

    store = SampleStore(cfg, dirs)
    train, val = (ratio_samples(store, cfg, task, split) for split in ("train", "validation"))
    try:
        net, history = train_ratio(train, val, cfg.estimator, cfg.training, task["seed"], label, log, out / "logs")
    except DataError as err:
        raise DataError(f"{label}: {err}") from None
    save_nets(out, {"ratio": net}, "ratio")
    report = {"network": {k: task[k] for k in ("channel", "process", "np", "side", "member")},
              "history": history, "events": {"train": [len(train[0].w), len(train[1].w)],
                                              "validation": [len(val[0].w), len(val[1].w)]}}
    report["closure"] = closure([net], *val)
    return report


def load_ratio(path: Path) -> RatioNet:
    """The net of one TrainRatio artifact."""
    from hsbi.estimators.io import load_nets

    return load_nets(Path(path), RatioNet)["ratio"]
