"""Set encoders for variable-size event sets: a deep set (per-event network, masked sum pooling,
set size as a feature) and a set transformer (masked self-attention, attention pooling).

Sets of different sizes travel as one padded tensor ``x`` of shape ``(B, N, D)`` with a boolean
``mask`` ``(B, N)`` (True: a real event); padded entries never change an output. Both encoders
map a batch of sets to summaries ``(B, S)`` and are invariant under permutations of the events.

References: Zaheer et al., Deep Sets (arXiv:1703.06114); Lee et al., Set Transformer
(arXiv:1810.00825); Heinrich, Mishra-Sharma, Pollard, Windischhofer, Hierarchical neural
simulation-based inference over event ensembles (arXiv:2306.12584).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from hsbi.exceptions import DataError

__all__ = [
    "ENCODERS",
    "DeepSet",
    "SetTransformer",
    "build_encoder",
    "check_sets",
    "mlp",
    "pad_sets",
    "set_mask",
]

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(n_in: int, widths: Sequence[int], n_out: int, activation: str = "silu") -> nn.Sequential:
    """``Linear -> act`` for each width, then a linear layer to ``n_out``."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(n_in, width), _ACTIVATIONS[activation]()]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


def set_mask(lengths: torch.Tensor, n_max: int) -> torch.Tensor:
    """``(B, n_max)`` boolean mask, True for the first ``lengths[b]`` entries of each set."""
    return torch.arange(n_max, device=lengths.device)[None, :] < lengths[:, None]


def pad_sets(events: np.ndarray, lengths: np.ndarray, n_max: int | None = None) -> np.ndarray:
    """Ragged sets (``events`` ``(sum(lengths), D)`` one set after another) padded with zeros to
    ``(B, n_max, D)`` float32; ``n_max`` defaults to the largest set."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n_max = int(lengths.max(initial=0)) if n_max is None else int(n_max)
    if lengths.max(initial=0) > n_max:
        raise DataError(f"a set has {int(lengths.max())} events, more than the padding {n_max}")
    events = np.asarray(events, dtype=np.float32).reshape(int(lengths.sum()), -1)
    out = np.zeros((len(lengths), n_max, events.shape[1]), dtype=np.float32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(events)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = events
    return out


def check_sets(lengths: torch.Tensor | np.ndarray, max_size: int | None, what: str = "set") -> None:
    """:class:`DataError` for an empty set, or one larger than ``max_size`` (the largest set the
    estimator was trained on; ``None``: no limit)."""
    lengths = np.asarray(lengths)
    if len(lengths) == 0:
        raise DataError(f"no {what}s given: expected at least one set of events")
    if (lengths < 1).any():
        i = int(np.flatnonzero(lengths < 1)[0])
        raise DataError(f"{what} {i} is empty: expected at least one event per set")
    if max_size is not None and (lengths > max_size).any():
        i = int(np.flatnonzero(lengths > max_size)[0])
        raise DataError(f"{what} {i} has {int(lengths[i])} events, more than the largest set "
                        f"size the estimator was trained on ({max_size}): retrain with larger sets "
                        "(sets.set_size) or split the data")


class DeepSet(nn.Module):
    """``rho([sum_i phi(x_i) / n, n / size_scale])``: per-event network, masked sum pooling
    and the set size as a feature.

    Arguments:
        n_features: ``D``, the event features.
        widths: hidden widths of ``phi`` and ``rho``.
        latent: ``K``, the per-event features summed over the set.
        summary: ``S``, the output size.
        size_scale: the set size is presented as ``n / size_scale``.

    The pooled state ``(sum_i phi(x_i), n)`` is additive over events, so a summary can be
    updated with new events without the old ones (:meth:`pool` and :meth:`finish`).
    """

    streamable = True

    def __init__(self, n_features: int, widths: Sequence[int], latent: int = 32,
                 summary: int = 32, size_scale: float = 100.0, activation: str = "silu") -> None:
        super().__init__()
        self.hparams = {"kind": "deepset", "n_features": n_features, "widths": list(widths),
                        "latent": latent, "summary": summary, "size_scale": size_scale,
                        "activation": activation}
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.phi = mlp(n_features, widths, latent, activation)
        self.rho = mlp(latent + 1, widths, summary, activation)
        self.size_scale = size_scale
        self.out_features = summary

    def event_features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)`` for events ``(..., D)``: ``(..., K)`` (dtype of the module)."""
        return self.phi((x - self.shift) / self.scale)

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The additive state: ``sum_i phi(x_i)`` over real events ``(B, K)`` and ``n`` ``(B,)``."""
        feats = self.event_features(x) * mask[..., None]
        return feats.sum(1), mask.sum(1).to(feats.dtype)

    def finish(self, total: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """The summary ``(B, S)`` from the pooled state."""
        return self.rho(torch.cat([total / n[:, None], (n / self.size_scale)[:, None]], dim=1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.finish(*self.pool(x, mask))


class _AttentionBlock(nn.Module):
    """Multi-head attention of ``queries`` on the masked set, residual, then a feed-forward."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = queries + self.attn(queries, keys, keys, key_padding_mask=~mask, need_weights=False)[0]
        h = self.norm1(h)
        return self.norm2(h + self.ff(h))


class SetTransformer(nn.Module):
    """Set attention blocks (SAB) over the events, pooling by attention of ``seeds`` learned
    queries (PMA), then ``rho`` with the set size as a feature.

    Arguments:
        n_features: ``D``; width: attention width; heads: attention heads; blocks: SABs;
        seeds: PMA queries; summary: ``S``; size_scale: as for :class:`DeepSet`.

    Not additive over events: a summary cannot be updated from a stored state (no streaming).
    """

    streamable = False

    def __init__(self, n_features: int, widths: Sequence[int], width: int = 32, heads: int = 4,
                 blocks: int = 2, seeds: int = 1, summary: int = 32, size_scale: float = 100.0,
                 activation: str = "silu") -> None:
        super().__init__()
        self.hparams = {"kind": "transformer", "n_features": n_features, "widths": list(widths),
                        "width": width, "heads": heads, "blocks": blocks, "seeds": seeds,
                        "summary": summary, "size_scale": size_scale, "activation": activation}
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.embed = nn.Linear(n_features, width)
        self.sab = nn.ModuleList(_AttentionBlock(width, heads) for _ in range(blocks))
        self.seeds = nn.Parameter(torch.randn(1, seeds, width) / width**0.5)
        self.pma = _AttentionBlock(width, heads)
        self.rho = mlp(seeds * width + 1, widths, summary, activation)
        self.size_scale = size_scale
        self.out_features = summary

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed((x - self.shift) / self.scale)
        for block in self.sab:
            h = block(h, h, mask)
        pooled = self.pma(self.seeds.expand(len(x), -1, -1), h, mask).flatten(1)
        n = mask.sum(1).to(pooled.dtype)[:, None] / self.size_scale
        return self.rho(torch.cat([pooled, n], dim=1))


#: Set encoders by the name used in configs (``sets.encoder``).
ENCODERS = {"deepset": DeepSet, "transformer": SetTransformer}


def build_encoder(hparams: dict) -> nn.Module:
    """An encoder from its ``hparams`` (as saved: ``kind`` and constructor arguments)."""
    args = dict(hparams)
    return ENCODERS[args.pop("kind")](**args)
