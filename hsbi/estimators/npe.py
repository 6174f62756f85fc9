"""Neural posterior estimation over event sets: a zuko conditional flow on a set summary,
amortised over the set size, with streaming updates of a deep-set summary.

The posterior of the POI (the nuisance marginalised) is ``q(theta | s(X))`` with ``s`` a set
encoder (:mod:`hsbi.estimators.sets`). The POI lives in the prior's box ``[low, high]``; the
flow models ``y = logit((theta - low) / (high - low))`` and densities are returned in ``theta``
(the Jacobian included), so they vanish outside the prior's support.

References: Papamakarios & Murray (arXiv:1605.06376), Greenberg et al. (arXiv:1905.07488);
Heinrich et al. (arXiv:2306.12584) for sets and streaming.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import zuko
from torch import nn

from hsbi.estimators.io import load_nets, save_nets
from hsbi.estimators.sets import build_encoder, check_sets, pad_sets, set_mask
from hsbi.exceptions import ConfigError, DataError

__all__ = ["SetNPE", "StreamingPosterior", "load_npe", "save_npe"]


class SetNPE(nn.Module):
    """``q(theta | X)`` for sets ``X``: an encoder (hparams as saved by the encoder) and a
    neural spline flow (``transforms``, conditioner ``widths``) on its summary.

    Arguments:
        encoder: the encoder's ``hparams`` (``kind`` deepset or transformer, sizes).
        bounds: ``[(low, high)]`` per inferred parameter: the prior's support.
        names: the parameters' names (messages, plots).
        max_set_size: the largest set seen in training; larger sets are refused.
    """

    def __init__(self, encoder: dict, bounds: Sequence[Sequence[float]], names: Sequence[str],
                 widths: Sequence[int] = (64, 64), transforms: int = 3,
                 max_set_size: int = 100) -> None:
        super().__init__()
        self.hparams = {"encoder": dict(encoder), "bounds": [list(map(float, b)) for b in bounds],
                        "names": list(names), "widths": list(widths), "transforms": transforms,
                        "max_set_size": int(max_set_size)}
        self.encoder = build_encoder(encoder)
        self.register_buffer("low", torch.tensor([b[0] for b in bounds], dtype=torch.float32))
        self.register_buffer("high", torch.tensor([b[1] for b in bounds], dtype=torch.float32))
        self.flow = zuko.flows.NSF(features=len(bounds), context=self.encoder.out_features,
                                   transforms=transforms, hidden_features=tuple(widths))

    @property
    def max_set_size(self) -> int:
        return self.hparams["max_set_size"]

    def _unbounded(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = logit(u)``, ``u = (theta - low) / (high - low)``, and ``log |dy / dtheta|``."""
        u = ((theta - self.low) / (self.high - self.low)).clamp(1e-6, 1 - 1e-6)  # float32 edges
        y = torch.log(u) - torch.log1p(-u)
        return y, -(torch.log(u) + torch.log1p(-u) + torch.log(self.high - self.low)).sum(-1)

    def context(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Set summaries ``(B, S)`` for padded sets ``(B, N, D)``."""
        return self.encoder(x, mask)

    def log_prob_context(self, theta: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``log q(theta | context)`` for ``theta`` ``(..., B, P)`` and ``context`` ``(B, S)``."""
        y, log_jac = self._unbounded(theta)
        return self.flow(context).log_prob(y) + log_jac

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``log q(theta_b | X_b)``: ``(B,)`` for ``theta`` ``(B, P)`` (training loss)."""
        return self.log_prob_context(theta, self.context(x, mask))

    def sample_context(self, context: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` posterior draws per summary: ``(n, B, P)`` inside the prior's support."""
        y = self.flow(context).sample((n,))
        return self.low + (self.high - self.low) * torch.sigmoid(y)

    def check_theta(self, theta: np.ndarray) -> np.ndarray:
        """``theta`` ``(F, P)``; :class:`DataError` outside the open prior support."""
        theta = np.asarray(theta, dtype=float).reshape(-1, len(self.hparams["bounds"]))
        for j, (name, (lo, hi)) in enumerate(zip(self.hparams["names"], self.hparams["bounds"])):
            bad = ~((theta[:, j] > lo) & (theta[:, j] < hi))
            if bad.any():
                raise DataError(f"posterior evaluated at {name} = {theta[bad, j][0]:g}, outside the "
                                f"prior's support ({lo:g}, {hi:g})")
        return theta

    @torch.inference_mode()
    def log_posterior(self, events: np.ndarray, lengths: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``log q(theta_k | X_b)`` for ragged sets and parameter points ``theta`` ``(F, P)``:
        ``(B, F)``. Refuses empty sets, sets above :attr:`max_set_size` and ``theta`` outside
        the prior's support."""
        check_sets(lengths, self.max_set_size)
        theta = torch.as_tensor(self.check_theta(theta), dtype=torch.float32)
        x = torch.as_tensor(pad_sets(events, lengths))
        ctx = self.context(x, set_mask(torch.as_tensor(lengths), x.shape[1]))
        out = self.log_prob_context(theta[:, None, :].expand(-1, len(ctx), -1), ctx)  # (F, B)
        return out.T.double().numpy()

    @torch.inference_mode()
    def sample(self, events: np.ndarray, lengths: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
        """``n`` posterior draws per set: ``(B, n, P)``."""
        check_sets(lengths, self.max_set_size)
        torch.manual_seed(seed)
        x = torch.as_tensor(pad_sets(events, lengths))
        ctx = self.context(x, set_mask(torch.as_tensor(lengths), x.shape[1]))
        return self.sample_context(ctx, n).permute(1, 0, 2).double().numpy()


class StreamingPosterior:
    """A posterior that is updated as events arrive, from a stored summary state: the deep
    set's ``(sum_i phi(x_i), n)`` (float64), never re-reading old events.

    The per-event features are computed in float64, so the state after updates of any sizes
    equals the state of all events at once to rounding (~1e-16 relative).
    """

    def __init__(self, npe: SetNPE, total: np.ndarray | None = None, n: int = 0) -> None:
        if not getattr(npe.encoder, "streamable", False):
            raise ConfigError(f"streaming updates need an additive set summary: "
                              f"sets.encoder = 'deepset' (this estimator has "
                              f"'{npe.encoder.hparams['kind']}')")
        self.npe = npe
        self._phi64 = copy.deepcopy(npe.encoder).double().eval()
        latent = npe.encoder.hparams["latent"]
        self.total = np.zeros(latent) if total is None else np.asarray(total, dtype=float).copy()
        self.n = int(n)

    def state(self) -> dict[str, np.ndarray]:
        """The stored summary: ``{"total": (K,), "n": ()}``."""
        return {"total": self.total.copy(), "n": np.array(self.n)}

    @classmethod
    def from_state(cls, npe: SetNPE, state: dict[str, np.ndarray]) -> StreamingPosterior:
        return cls(npe, state["total"], int(state["n"]))

    @torch.inference_mode()
    def update(self, events: np.ndarray) -> StreamingPosterior:
        """Add events ``(k, D)``; refuses an empty update and a total above ``max_set_size``."""
        events = np.asarray(events, dtype=float)
        events = events.reshape(len(events), self.npe.encoder.hparams["n_features"])
        if len(events) == 0:
            raise DataError("streaming update with no events: expected at least one event")
        if self.n + len(events) > self.npe.max_set_size:
            raise DataError(f"streaming update to {self.n + len(events)} events, more than the "
                            f"largest set size the estimator was trained on ({self.npe.max_set_size})")
        feats = self._phi64.event_features(torch.as_tensor(events, dtype=torch.float64))
        self.total = self.total + feats.sum(0).numpy()
        self.n += len(events)
        return self

    @torch.inference_mode()
    def context(self) -> torch.Tensor:
        if self.n == 0:
            raise DataError("the streaming posterior has seen no events: call update() first")
        total = torch.as_tensor(self.total, dtype=torch.float64)[None]
        n = torch.tensor([float(self.n)], dtype=torch.float64)
        return self._phi64.finish(total, n).float()

    @torch.inference_mode()
    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        """``log q(theta_k | events so far)`` for ``theta`` ``(F, P)``: ``(F,)``."""
        theta = torch.as_tensor(self.npe.check_theta(theta), dtype=torch.float32)
        return self.npe.log_prob_context(theta[:, None, :], self.context())[:, 0].double().numpy()


def save_npe(path: Path, npe: SetNPE) -> None:
    """``weights.safetensors`` and ``estimator.json`` (kind ``set_npe``), no pickle."""
    save_nets(path, {"posterior": npe}, "set_npe")


def load_npe(path: Path) -> SetNPE:
    return load_nets(Path(path), SetNPE)["posterior"]
