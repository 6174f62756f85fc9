"""Density estimators (DLE): conditional normalising flows ``p_c(x | z)`` built on zuko."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import zuko

from hsbi.estimators.io import Standardised, load_nets, save_nets

__all__ = ["DLEEnsemble", "FlowNet", "load_dle_members", "save_dle_member"]


class FlowNet(Standardised):
    """A neural spline flow ``p(x | z)`` (zuko ``NSF``) with standardised features and context.

    Arguments:
        n_features: ``D``; the nuisance ``z`` is the (one-dimensional) context.
        transforms: number of autoregressive spline transforms.
        widths: hidden layer widths of each transform's conditioner.

    ``log_prob(inputs)`` takes ``(N, D + 1)`` (features, then nuisance) and returns ``(N,)``
    normalised log densities in the original feature units (the standardisation's Jacobian is
    included), so ensembles of different members are comparable.
    """

    def __init__(self, n_features: int, widths: Sequence[int], transforms: int = 3) -> None:
        super().__init__(n_features + 1)
        self.hparams = {"n_features": n_features, "widths": list(widths), "transforms": transforms}
        self.flow = zuko.flows.NSF(
            features=n_features, context=1, transforms=transforms, hidden_features=tuple(widths)
        )

    def log_prob(self, inputs: torch.Tensor) -> torch.Tensor:
        std = (inputs - self.shift) / self.scale
        d = self.hparams["n_features"]
        return self.flow(std[:, d:]).log_prob(std[:, :d]) - torch.log(self.scale[:d]).sum()


def save_dle_member(path: Path, nets: Mapping[str, FlowNet]) -> None:
    """Write one ensemble member: ``weights.safetensors`` and ``estimator.json`` (no pickle)."""
    save_nets(path, nets, "dle")


def _load_member(path: Path) -> dict[str, FlowNet]:
    return load_nets(path, FlowNet)


def load_dle_members(paths: Sequence[Path]) -> DLEEnsemble:
    return DLEEnsemble([_load_member(Path(p)) for p in paths])


class DLEEnsemble:
    """Ensemble of per-process conditional flows, combined as an equal-weight mixture
    (``log mean exp`` over members: still a normalised density).

    Implements ``ComponentDensity``: ``log_components(x, z)`` is ``log p_c(x | z_k)``,
    ``(K, n, C)``.
    """

    def __init__(self, members: Sequence[Mapping[str, FlowNet]], chunk: int = 1 << 16,
                 dtype: torch.dtype = torch.float32) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        with warnings.catch_warnings():  # torch's pytree deprecation note on copying zuko's modules
            warnings.simplefilter("ignore", FutureWarning)
            self.members = [{p: net if dtype == torch.float32 else copy.deepcopy(net).to(dtype)
                             for p, net in m.items()} for m in members]
        self.processes = tuple(self.members[0])
        self.chunk, self.dtype = chunk, dtype

    def astype(self, dtype: torch.dtype) -> DLEEnsemble:
        """The same ensemble evaluated in ``dtype`` (float32 by default; float64 for MIGRAD, whose
        numerical derivatives need a smooth function of the nuisance)."""
        return DLEEnsemble(self.members, self.chunk, dtype)

    @torch.inference_mode()
    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        x_t = torch.as_tensor(np.asarray(x), dtype=self.dtype)
        z_t = torch.as_tensor(np.atleast_1d(nuisance), dtype=self.dtype)
        n, k = x_t.shape[0], z_t.shape[0]
        inputs = torch.cat([x_t.repeat(k, 1), z_t.repeat_interleave(n).unsqueeze(-1)], dim=1)
        out = torch.empty(len(self.members), k * n, len(self.processes), dtype=self.dtype)
        for m, member in enumerate(self.members):
            for c, proc in enumerate(self.processes):
                for s in range(0, k * n, self.chunk):
                    out[m, s : s + self.chunk, c] = member[proc].log_prob(inputs[s : s + self.chunk])
        mixed = torch.logsumexp(out.double(), dim=0) - math.log(len(self.members))
        return mixed.reshape(k, n, len(self.processes)).numpy()
