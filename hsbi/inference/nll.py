"""The declared model's likelihood on numpy arrays: :class:`DeclaredLikelihood` (the NLL, its
gradient and Hessian from the fused kernels of :mod:`hsbi.inference.kernels`) and the numpy
datasets a portable workspace loads (:class:`ArrayEvents`, :class:`ArrayNormalisation`,
:class:`ArrayDataset`).

Nothing here imports torch: a workspace fits in a process without it. The torch datasets of
:mod:`hsbi.inference.statmodel` (what the workflows build from networks) expose the same
``kernel_arrays``, ``aux`` and ``take``, so one likelihood object evaluates both, and their
results are identical bit for bit. The tensor expressions (:mod:`hsbi.inference.derivatives`,
``reference=True``; :func:`hsbi.inference.statmodel.nll`, :meth:`DeclaredLikelihood.value`)
stay as the cross-check and import torch when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from hsbi.inference.model import ChannelModel, StatModel
from hsbi.models.interpolation import code4_coefficients

__all__ = ["ArrayDataset", "ArrayEvents", "ArrayNormalisation", "DeclaredLikelihood", "KernelLayout", "channel_terms",
           "constraint_terms", "evaluate", "events_layout", "normalisation_layout"]


def channel_terms(ch: ChannelModel, norm: Any, events: Any, rows: np.ndarray, theta: np.ndarray, hessian: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One channel's value (B,), gradient (B, P) and Hessian (B, P, P) (None without
    ``hessian``) for datasets ``rows`` of ``events``, one per row of ``theta`` (B, P): the yields'
    factors, the normalisation's and the events' sums, and their assembly
    (:mod:`hsbi.inference.derivatives` gives the formulas). ``norm`` and ``events`` give their
    arrays through ``kernel_arrays(own, counts)``."""
    from hsbi.inference.kernels import assemble, event_sums, norm_sums, yield_terms

    th = np.ascontiguousarray(theta, dtype=np.float64)
    B = th.shape[0]
    C, S = len(ch.processes), len(ch.shape_index)
    F, Q, F2, logG, dG, d2G = yield_terms(th, *ch.kernel_constants)
    own, counts = ch.own_shapes
    alpha = np.ascontiguousarray(th[:, ch.shape_index])
    if S:
        # rows at the same shape NPs (every toy at a fit's start) share their normalisation sums
        uniq, inverse = np.unique(alpha, axis=0, return_inverse=True) if B > 1 else (alpha, None)
        sums = norm_sums(np.ascontiguousarray(uniq), *norm.kernel_arrays(own, counts), own, counts, hessian)
        log_norm, mean, second = sums if inverse is None else (a[inverse.reshape(-1)] for a in sums)
    else:
        log_norm, mean, second = np.zeros((B, C)), np.zeros((B, C, 0)), np.zeros((B, C, 0, 0))
    sums = event_sums(np.asarray(rows, dtype=np.int64), alpha, logG - log_norm, F, *events.kernel_arrays(own, counts),
                      own, counts, hessian)
    value, grad, H = assemble(F, Q, F2, logG, dG, d2G, np.asarray(ch.shape_index, dtype=np.int64), mean, second,
                              *sums, hessian)
    return value, grad, H if hessian else None


def constraint_terms(model: StatModel, theta: np.ndarray, aux: np.ndarray) -> tuple[np.ndarray, ...]:
    """The constraints' ``sum (theta - a)^2 / (2 sigma^2)`` (B,), gradient and Hessian."""
    sig = np.nan_to_num(model.sigmas, nan=np.inf)
    inv = np.where(np.isfinite(sig), 1.0 / sig**2, 0.0)
    diff = theta - np.nan_to_num(aux, nan=0.0)
    B, P = theta.shape
    return (0.5 * inv * diff**2).sum(-1), inv * diff, np.broadcast_to(np.diag(inv), (B, P, P)).copy()


def evaluate(model: StatModel, norms: Sequence[Any], data: Any, theta: np.ndarray, rows: np.ndarray | None = None,
             hessian: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The NLL (B,), gradient (B, P) and, with ``hessian``, Hessian (B, P, P) of datasets
    ``rows`` of ``data`` (all by default), one per row of ``theta``."""
    rows = np.arange(data.batch, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    value, grad, hess = constraint_terms(model, theta, np.asarray(data.aux, dtype=np.float64)[rows])
    for ch, norm, events in zip(model.channels, norms, data.channels):
        v, g, h = channel_terms(ch, norm, events, rows, theta, hessian)
        value, grad = value + v, grad + g
        if hessian:
            hess = hess + h
    return value, grad, hess if hessian else None


@dataclass(frozen=True)
class DeclaredLikelihood:
    """The declared model and its normalisation samples: what every fitter of
    :mod:`hsbi.inference.fitting` reads (the ``Likelihood`` protocol). ``norms`` and the datasets
    are numpy (:class:`ArrayNormalisation`, :class:`ArrayDataset`) or torch
    (:mod:`hsbi.inference.statmodel`); ``reference`` asks for the derivatives' tensor
    expressions (torch datasets only)."""

    model: StatModel
    norms: tuple[Any, ...]

    def nll_grad_hess(self, data: Any, theta: Any, rows: np.ndarray | None = None, hessian: bool = True,
                      reference: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if reference:
            import torch

            from hsbi.inference.derivatives import nll_grad_hess
            from hsbi.inference.statmodel import DTYPE

            v, g, h = nll_grad_hess(self.model, self.norms, data, torch.as_tensor(np.asarray(theta), dtype=DTYPE),
                                    rows=rows, reference=True)
            return v.numpy(), g.numpy(), h.numpy() if hessian else None
        return evaluate(self.model, self.norms, data, np.asarray(theta, dtype=np.float64), rows, hessian)

    def value_and_grad(self, data: Any, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """NLL and analytic gradient of the first dataset of ``data``."""
        value, grad, _ = self.nll_grad_hess(data, np.asarray(theta, dtype=np.float64)[None],
                                            rows=np.zeros(1, dtype=np.int64), hessian=False)
        return float(value[0]), grad[0]

    def batch(self, data: Any, theta: Any):  # -> torch.Tensor
        """The NLL of every dataset of torch ``data`` by the tensor expressions (autograd's
        reference)."""
        import torch

        from hsbi.inference.statmodel import DTYPE, nll

        return nll(self.model, self.norms, data, torch.as_tensor(np.asarray(theta), dtype=DTYPE))

    def value(self, data: Any, theta: np.ndarray) -> float:
        """The NLL of the first dataset of torch ``data`` by the tensor expressions."""
        import torch

        with torch.no_grad():
            return float(self.batch(data, np.asarray(theta, dtype=float)[None])[0])


class KernelLayout:
    """The fused kernels' layout of a channel's arrays, made once per channel structure (a fit
    evaluates the same arrays several times): :meth:`kernel_arrays` caches what :meth:`_layout`
    makes for a channel's ``own`` shape NPs. The numpy datasets here and the torch ones of
    :mod:`hsbi.inference.statmodel` share it."""

    @cached_property
    def _compacted(self) -> dict:
        return {}

    def kernel_arrays(self, own: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        key = (own.tobytes(), own.shape)
        if key not in self._compacted:
            self._compacted[key] = self._layout(own, counts)
        return self._compacted[key]

    def set_kernel_arrays(self, own: np.ndarray, arrays: tuple[np.ndarray, ...]) -> None:
        """Give :meth:`kernel_arrays` for ``own`` made elsewhere (toys gathered from their pool's
        layout: :func:`hsbi.inference.kernels.gather_events`)."""
        self._compacted[(own.tobytes(), own.shape)] = arrays

    def _layout(self, own: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError


def normalisation_layout(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, coef: np.ndarray, own: np.ndarray,
                         counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """What :func:`hsbi.inference.kernels.norm_sums` reads of a normalisation sample: ``v``,
    ``log |v|`` (-inf: padding; the signs of signed weights stay in ``v``), ``lo``, ``hi``,
    ``coef`` and their per-process compact copies (:func:`hsbi.inference.kernels.compact`)."""
    from hsbi.inference.kernels import compact

    v, lo, hi, coef = (np.ascontiguousarray(a, dtype=np.float64) for a in (v, lo, hi, coef))
    logv = np.where(v != 0, np.log(np.where(v != 0, np.abs(v), 1.0)), -np.inf)
    return (v, logv, lo, hi, coef, *compact(lo, hi, coef, own, counts))


def events_layout(w: np.ndarray, logp: np.ndarray, lo: np.ndarray, hi: np.ndarray, coef: np.ndarray,
                  own: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """What :func:`hsbi.inference.kernels.event_sums` reads of a batch of datasets: ``w`` and
    the per-process layout over the channel's ``own`` NPs (:func:`hsbi.inference.kernels.compact_events`)."""
    from hsbi.inference.kernels import compact_events

    w, logp, lo, hi, coef = (np.ascontiguousarray(a, dtype=np.float64) for a in (w, logp, lo, hi, coef))
    return (w, *compact_events(logp, lo, hi, coef, own, counts))


@dataclass(frozen=True)
class ArrayNormalisation(KernelLayout):
    """A channel's normalisation sample as numpy arrays (:class:`hsbi.inference.statmodel.Normalisation`
    without torch): ``v`` (C, n) weights summing to 1 per process (0: padding), shape log ratios
    ``lo``, ``hi`` (C, n, S), already self-normalised."""

    v: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def _layout(self, own: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        lo, hi = (np.asarray(a, dtype=np.float64) for a in (self.lo, self.hi))
        return normalisation_layout(self.v, lo, hi, code4_coefficients(lo, hi), own, counts)


@dataclass(frozen=True)
class ArrayEvents(KernelLayout):
    """Per-event terms of a batch of datasets in one channel as numpy arrays
    (:class:`hsbi.inference.statmodel.ChannelEvents` without torch): ``w`` (B, n) weights (0:
    padding), ``logp`` (B, n, C), ``lo``/``hi`` (B, n, C, S)."""

    w: np.ndarray
    logp: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def batch(self) -> int:
        return self.w.shape[0]

    def take(self, rows: np.ndarray) -> ArrayEvents:
        rows = np.asarray(rows, dtype=np.int64)
        return ArrayEvents(self.w[rows], self.logp[rows], self.lo[rows], self.hi[rows])

    def _layout(self, own: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        lo, hi = (np.asarray(a, dtype=np.float64) for a in (self.lo, self.hi))
        return events_layout(self.w, self.logp, lo, hi, code4_coefficients(lo, hi), own, counts)


@dataclass(frozen=True)
class ArrayDataset:
    """Datasets (a batch of B) as numpy arrays: per-channel :class:`ArrayEvents` and the global
    observables ``aux`` (B, P)."""

    channels: tuple[ArrayEvents, ...]
    aux: np.ndarray

    @property
    def batch(self) -> int:
        return self.aux.shape[0]

    def take(self, rows: np.ndarray) -> ArrayDataset:
        rows = np.asarray(rows, dtype=np.int64)
        return ArrayDataset(tuple(ch.take(rows) for ch in self.channels), self.aux[rows])
