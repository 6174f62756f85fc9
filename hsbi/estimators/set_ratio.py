"""The frequentist set estimator: a dataset-level log-likelihood ``s(X, theta)`` (up to terms
free of ``theta``) with the structure of an extended likelihood, learned as a ratio classifier.

``s(X, theta) = sum_i g(x_i, theta) + h(n, theta)``: a ``theta``-conditioned per-event network
summed over the set (a deep set with masked sum pooling) and a set-size term. The exact
extended log-likelihood ``-Lambda(theta) + sum_i log lambda(x_i | theta)`` has this form, so the
estimator can represent it; anything that depends on ``X`` alone cancels in likelihood ratios.

It is trained on pairs of parameter points ``(theta_a, theta_b)`` drawn symmetrically: a set
simulated at ``theta_a`` is a positive, with the logit ``s(X, theta_a) - s(X, theta_b)``
(:func:`pair_loss`). The optimum is ``log p(X | theta_a) / p(X | theta_b)`` for every pair in
the support (the mirrored pair is the negative of the same classifier), i.e. ``s`` is the
set-level log-likelihood up to a function of ``X``: profile-likelihood ratios follow directly.

Reference: Heinrich et al. (arXiv:2306.12584), frequentist set-level estimators; Cranmer,
Pavez, Louppe (arXiv:1506.02169) for parameterised classifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hsbi.estimators.io import load_nets, save_nets
from hsbi.estimators.sets import check_sets, mlp
from hsbi.exceptions import DataError

__all__ = ["SetRatioNet", "load_set_ratio", "pair_loss", "save_set_ratio"]


class SetRatioNet(nn.Module):
    """``s(X, theta) = sum_i g(x_i, theta) + h(n / size_scale, theta)``.

    Arguments:
        n_features: ``D``; n_params: ``P`` (poi, nuisance); widths: hidden widths of ``g``, ``h``.
        bounds: ``[(low, high)]`` per parameter: the training proposal's support (refused outside).
        max_set_size: the largest set in training (``h`` has seen no larger ``n``).
    """

    def __init__(self, n_features: int, widths: Sequence[int], bounds: Sequence[Sequence[float]],
                 names: Sequence[str], max_set_size: int, size_scale: float = 100.0,
                 activation: str = "silu") -> None:
        super().__init__()
        n_params = len(bounds)
        self.hparams = {"n_features": n_features, "widths": list(widths),
                        "bounds": [list(map(float, b)) for b in bounds], "names": list(names),
                        "max_set_size": int(max_set_size), "size_scale": size_scale,
                        "activation": activation}
        for name, width in (("x_shift", n_features), ("t_shift", n_params)):
            self.register_buffer(name, torch.zeros(width))
        for name, width in (("x_scale", n_features), ("t_scale", n_params)):
            self.register_buffer(name, torch.ones(width))
        self.g = mlp(n_features + n_params, widths, 1, activation)
        self.h = mlp(1 + n_params, widths, 1, activation)

    @property
    def max_set_size(self) -> int:
        return self.hparams["max_set_size"]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``s(X_b, theta_bk)``: ``(B, K)`` for sets ``(B, N, D)``, mask ``(B, N)`` and
        ``theta`` ``(B, K, P)``. The first layer of ``g`` is split into its event and
        parameter parts, so each event is embedded once for all ``K`` points."""
        xs = (x - self.x_shift) / self.x_scale
        ts = (theta - self.t_shift) / self.t_scale
        first, rest = self.g[0], self.g[1:]
        d = xs.shape[-1]
        hx = xs @ first.weight[:, :d].T + first.bias  # (B, N, H)
        ht = ts @ first.weight[:, d:].T  # (B, K, H)
        per_event = rest(hx[:, :, None, :] + ht[:, None, :, :]).squeeze(-1)  # (B, N, K)
        pooled = (per_event * mask[..., None]).sum(1)
        n = mask.sum(1).to(xs.dtype)[:, None, None].expand(-1, theta.shape[1], 1)
        return pooled + self.h(torch.cat([n / self.hparams["size_scale"], ts], dim=-1)).squeeze(-1)

    def check_theta(self, theta: np.ndarray) -> np.ndarray:
        """``theta`` ``(K, P)``; :class:`DataError` outside the training proposal's support."""
        theta = np.asarray(theta, dtype=float).reshape(-1, len(self.hparams["bounds"]))
        for j, (name, (lo, hi)) in enumerate(zip(self.hparams["names"], self.hparams["bounds"])):
            bad = (theta[:, j] < lo) | (theta[:, j] > hi)
            if bad.any():
                raise DataError(f"set likelihood evaluated at {name} = {theta[bad, j][0]:g}, "
                                f"outside the range it was trained on [{lo:g}, {hi:g}]")
        return theta

    @torch.inference_mode()
    def log_likelihood(self, events: np.ndarray, theta: np.ndarray, chunk: int = 1 << 21) -> np.ndarray:
        """``s(X, theta_k)`` of one set (events ``(n, D)``) at points ``(K, P)``: ``(K,)``
        float64, evaluated in chunks of about ``chunk`` (event, point) pairs."""
        events = np.asarray(events, dtype=np.float32)
        events = events.reshape(len(events), self.hparams["n_features"])
        check_sets(np.array([len(events)]), self.max_set_size)
        theta = self.check_theta(theta)
        x = torch.as_tensor(events)[None]
        mask = torch.ones(1, len(events), dtype=torch.bool)
        t = torch.as_tensor(theta, dtype=torch.float32)
        step = max(1, chunk // max(len(events), 1))
        out = [self(x, mask, t[s : s + step][None])[0] for s in range(0, len(t), step)]
        return torch.cat(out).double().numpy()


def pair_loss(net: SetRatioNet, x: torch.Tensor, mask: torch.Tensor, theta_a: torch.Tensor,
              theta_b: torch.Tensor) -> torch.Tensor:
    """Mean ``softplus(-(s(X, theta_a) - s(X, theta_b)))`` for sets simulated at ``theta_a``:
    the cross-entropy of the pair classifier (see the module docstring)."""
    s = net(x, mask, torch.stack([theta_a, theta_b], dim=1))
    return F.softplus(s[:, 1] - s[:, 0]).mean()


def save_set_ratio(path: Path, net: SetRatioNet) -> None:
    """``weights.safetensors`` and ``estimator.json`` (kind ``set_ratio``), no pickle."""
    save_nets(path, {"likelihood": net}, "set_ratio")


def load_set_ratio(path: Path) -> SetRatioNet:
    if not (Path(path) / "estimator.json").exists():
        raise DataError(f"{path}: no estimator.json (not a trained set estimator)")
    return load_nets(Path(path), SetRatioNet)["likelihood"]
