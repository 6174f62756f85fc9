"""Simulating training sets and training the set estimators (NPE, set-level ratio) with
Lightning, batched over padded tensors (no DataLoader)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hsbi.config.sets import SetsConfig
from hsbi.estimators.npe import SetNPE
from hsbi.estimators.set_ratio import SetRatioNet, pair_loss
from hsbi.estimators.sets import check_sets, pad_sets, set_mask
from hsbi.exceptions import DataError
from hsbi.models.bump_hunt import SetModel
from hsbi.training.data import batch_loader
from hsbi.training.fit import STEPS_PER_CALL, EstimatorModule, fit_per_process

__all__ = [
    "NPEModule",
    "RatioModule",
    "build_estimator",
    "chunk_seed",
    "merge_chunks",
    "simulate_chunk",
    "symmetric_pairs",
    "train_set_estimator",
]

#: Sets per validation batch.
VAL_SETS = 1024


def chunk_seed(seed: int, split: str, index: int) -> int:
    """The seed of one chunk of simulated sets (depends on the split and chunk index only)."""
    return int(np.random.SeedSequence([seed, {"train": 0, "val": 1}[split], index]).generate_state(1)[0])


def symmetric_pairs(model: SetModel, rng: np.random.Generator, n: int, local_fraction: float,
                    scale: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` parameter pairs ``(theta_a, theta_b)``, each ``(n, 2)``, with a distribution
    symmetric under ``a <-> b`` (the pair classifier's requirement): a share ``local_fraction``
    as ``c +- delta / 2`` with ``c`` from the prior and ``delta ~ N(0, scale)``, the others two
    independent prior draws; pairs leaving the prior's support are redrawn (a symmetric cut)."""
    a, b = model.sample_prior(rng, n), model.sample_prior(rng, n)
    local = rng.uniform(size=n) < local_fraction
    lo = np.array([model.poi_range[0], model.nuisance_range[0]])
    hi = np.array([model.poi_range[1], model.nuisance_range[1]])
    todo = np.flatnonzero(local)
    while len(todo):
        c = model.sample_prior(rng, len(todo))
        delta = rng.normal(size=(len(todo), 2)) * np.asarray(scale)
        a[todo], b[todo] = c + delta / 2, c - delta / 2
        inside = np.all((a[todo] >= lo) & (a[todo] <= hi) & (b[todo] >= lo) & (b[todo] <= hi), axis=1)
        todo = todo[~inside]
    return a, b


def simulate_chunk(model: SetModel, cfg: SetsConfig, split: str, index: int,
                   n: int) -> dict[str, np.ndarray]:
    """``n`` training sets: ``events`` ``(sum n_b, D)`` float32, ``lengths`` ``(n,)``,
    ``theta`` ``(n, 2)`` (the parameters each set was simulated at) and, for the ratio,
    ``theta_b`` ``(n, 2)`` (its partner in the pair)."""
    rng = np.random.default_rng(chunk_seed(cfg.seed, split, index))
    if cfg.estimator == "ratio":
        theta, theta_b = symmetric_pairs(model, rng, n, cfg.local_fraction, cfg.pair_scale)
    else:
        theta, theta_b = model.sample_prior(rng, n), None
    lo, hi = cfg.set_size
    sizes = None if model.random_size else rng.integers(lo, hi + 1, n)
    events, lengths = model.simulate(rng, theta, sizes)
    out = {"events": events.astype(np.float32), "lengths": lengths, "theta": theta.astype(np.float32)}
    if theta_b is not None:
        out["theta_b"] = theta_b.astype(np.float32)
    return out


def merge_chunks(chunks: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate chunks of simulated sets (one split)."""
    if not chunks:
        raise DataError("no simulated set chunks: expected at least one")
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


class NPEModule(EstimatorModule):
    """``-log q(theta | X)`` averaged over the sets of a batch."""

    def loss_of(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, lengths, theta = batch
        n = int(lengths.max())
        return -self.net.log_prob(theta[:, :1], x[:, :n], set_mask(lengths, n)).mean()  # the POI


class RatioModule(EstimatorModule):
    """The pair classifier's cross-entropy (:func:`~hsbi.estimators.set_ratio.pair_loss`)."""

    def loss_of(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, lengths, theta_a, theta_b = batch
        n = int(lengths.max())
        return pair_loss(self.net, x[:, :n], set_mask(lengths, n), theta_a, theta_b)


def build_estimator(model: SetModel, cfg: SetsConfig, max_set_size: int) -> torch.nn.Module:
    """An untrained estimator of kind ``cfg.estimator`` for ``model``."""
    widths, d = list(cfg.widths), model.n_features
    if cfg.estimator == "ratio":
        bounds = [model.poi_range, model.nuisance_range]
        return SetRatioNet(d, widths, bounds, [model.poi_name, model.nuisance_name], max_set_size,
                           size_scale=float(max_set_size))
    common = {"n_features": d, "widths": widths, "summary": cfg.summary, "size_scale": float(max_set_size)}
    if cfg.encoder == "deepset":
        encoder = {"kind": "deepset", "latent": cfg.latent, **common}
    else:
        encoder = {"kind": "transformer", "width": cfg.latent, "heads": cfg.heads, "blocks": cfg.blocks, **common}
    return SetNPE(encoder, [model.poi_range], [model.poi_name], widths, cfg.transforms, max_set_size)


def _tensors(split: Mapping[str, np.ndarray], n_max: int, ratio: bool) -> tuple[torch.Tensor, ...]:
    check_sets(split["lengths"], n_max, "training set")
    x = torch.as_tensor(pad_sets(split["events"], split["lengths"], n_max))
    out = [x, torch.as_tensor(split["lengths"], dtype=torch.int64), torch.as_tensor(split["theta"])]
    return (*out, torch.as_tensor(split["theta_b"])) if ratio else tuple(out)


def _standardise(net: torch.nn.Module, events: np.ndarray, theta: np.ndarray) -> None:
    mean, std = torch.as_tensor(events.mean(0)), torch.as_tensor(events.std(0)).clamp_min(1e-6)
    target = net if isinstance(net, SetRatioNet) else net.encoder
    prefix = "x_" if isinstance(net, SetRatioNet) else ""
    getattr(target, f"{prefix}shift").copy_(mean)
    getattr(target, f"{prefix}scale").copy_(std)
    if isinstance(net, SetRatioNet):
        net.t_shift.copy_(torch.as_tensor(theta.mean(0)))
        net.t_scale.copy_(torch.as_tensor(theta.std(0)).clamp_min(1e-6))


def train_set_estimator(
    train: Mapping[str, np.ndarray],
    val: Mapping[str, np.ndarray],
    model: SetModel,
    cfg: SetsConfig,
    label: str = "TrainSetEstimator",
    log: Callable[[str], None] = print,
    log_dir: Path | None = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Fit the estimator ``cfg.estimator`` on simulated sets (``train``, ``val``: merged chunks
    of :func:`simulate_chunk`); returns the net (eval mode) and its per-epoch metrics."""
    ratio = cfg.estimator == "ratio"
    n_max = int(max(train["lengths"].max(), val["lengths"].max()))
    name = "likelihood" if ratio else "posterior"

    def build(_: str) -> tuple[torch.nn.Module, EstimatorModule, Any, Any]:
        net = build_estimator(model, cfg, n_max)
        _standardise(net, train["events"], train["theta"])
        module = (RatioModule if ratio else NPEModule)(net, cfg.training)
        seed = cfg.training.seed
        return (net, module,
                batch_loader(*_tensors(train, n_max, ratio), batch_size=cfg.training.batch_size,
                             shuffle=True, seed=seed, block=STEPS_PER_CALL),
                batch_loader(*_tensors(val, n_max, ratio), batch_size=VAL_SETS, shuffle=False))

    threads = torch.get_num_threads()
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    try:
        nets, history = fit_per_process((name,), cfg.training, cfg.training.seed, label, log, build, log_dir)
    finally:
        torch.set_num_threads(threads)
    return nets[name], history[name]
