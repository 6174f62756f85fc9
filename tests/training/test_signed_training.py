"""Signed (NLO-like) event weights in the weighted classifier: with 20% negative-weight events
and the same expected density, the learned ratio still closes (issue 18)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from hsbi.config import load_config
from hsbi.data.statmodel import Events
from hsbi.diagnostics.closure import closure_chi2
from hsbi.training.statmodel import log_ratio, train_ratio

#: p-value below which a closure chi2 fails (per feature, 2 features, 2 trainings)
P_MIN = 1e-3


def _samples(rng: np.random.Generator, n: int, signed: bool) -> tuple[Events, Events]:
    """Numerator N((0.5, 0), 1) and denominator N(0, 1) in 2 features, ``n`` events each. Signed:
    60% of the numerator's events from its density (weight 1) and, from a wider N(0, 1.5^2), 20%
    with weight +1 and 20% with weight -1: the same expected density, 20% of the events negative."""
    den = Events(rng.normal(0.0, 1.0, (n, 2)).astype(np.float32), np.ones(n))
    if not signed:
        return Events((rng.normal(0.0, 1.0, (n, 2)) + [0.5, 0.0]).astype(np.float32), np.ones(n)), den
    k = n // 5
    x = np.concatenate([rng.normal(0.0, 1.0, (n - 2 * k, 2)) + [0.5, 0.0], rng.normal(0.0, 1.5, (2 * k, 2))])
    w = np.concatenate([np.ones(n - 2 * k), np.ones(k), -np.ones(k)])
    return Events(x.astype(np.float32), w), den


@pytest.mark.parametrize("signed", [False, True])
def test_weighted_classifier_closes_with_signed_weights(signed: bool) -> None:
    """Closure of the learned ratio on fresh samples: the denominator reweighted by exp(logit)
    against the (signed) numerator, chi2 over 20 bins per feature with the bins' sum-w^2
    variances; each must have a p-value above 1e-3 (measured: 0.77 and 0.18 with positive
    weights, 0.39 and 0.25 with 20% negative ones). The mean deviation from the exact log ratio
    on a grid over |x| < 1.5 is a coarse guard only (measured 0.021 and 0.025; bound 0.1)."""
    cfg = load_config("default", ["training.max_epochs=8", "training.batch_size=512"])
    training = replace(cfg.training, seed=3)
    rng = np.random.default_rng(5)
    train, val, test = (_samples(rng, 24_000, signed) for _ in range(3))
    torch.manual_seed(3)
    net, history = train_ratio(train, val, cfg.estimator, training, seed=3, label="signed", log=lambda _: None)
    assert all(np.isfinite(e["val_loss"]) for e in history)
    num, den = test
    weights = np.exp(log_ratio([net], den.x))
    for feature in closure_chi2(num.x, den.x, weights, bins=20, numerator_weights=num.w):
        p = stats.chi2.sf(feature["chi2"], feature["ndf"])
        assert p > P_MIN, (signed, feature, p)
    # the learned log ratio near the exact 0.5 x0 - 0.125 where the data are (|x| < 1.5)
    grid = np.stack(np.meshgrid(np.linspace(-1.5, 1.5, 7), np.linspace(-1.5, 1.5, 7)), -1).reshape(-1, 2)
    deviation = np.abs(log_ratio([net], grid.astype(np.float32)) - (0.5 * grid[:, 0] - 0.125)).mean()
    assert deviation < 0.1, deviation
