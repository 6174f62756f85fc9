"""Training one DLE ensemble member (one conditional flow per process) with Lightning."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from hsbi.config import EstimatorConfig, TrainingConfig
from hsbi.data import numerator_arrays
from hsbi.estimators import FlowNet
from hsbi.training.fit import EstimatorModule, fit_per_process
from hsbi.training.lre import loaders

__all__ = ["FlowModule", "train_dle_member"]


class FlowModule(EstimatorModule):
    """Maximum likelihood: the loss is ``-log p(x | z)`` averaged over the batch."""

    def loss_of(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (inputs,) = batch
        return -self.net.log_prob(inputs).mean()


def _inputs(samples: dict[str, np.ndarray], split: str, proc: str) -> torch.Tensor:
    x, z = numerator_arrays(samples, split, proc)
    return torch.as_tensor(np.concatenate([x, z[:, None]], axis=1), dtype=torch.float32)


def train_dle_member(
    samples: dict[str, np.ndarray],
    processes: tuple[str, ...],
    estimator: EstimatorConfig,
    training: TrainingConfig,
    seed: int,
    label: str = "member",
    log: Callable[[str], None] = print,
    log_dir: Path | None = None,
    callbacks: Callable[[str], list[L.Callback]] | None = None,
) -> tuple[dict[str, FlowNet], dict[str, list[dict[str, float]]]]:
    """Fit ``p_c(x | z)`` to each process's numerator sample; returns flows and histories
    (``log_dir``, ``callbacks``: as for :func:`~hsbi.training.lre.train_lre_member`)."""

    def build(proc: str) -> tuple[FlowNet, FlowModule, Any, Any]:
        train_in = _inputs(samples, "train", proc)
        flow = FlowNet(train_in.shape[1] - 1, estimator.widths, estimator.transforms)
        flow.set_standardisation(train_in)
        return (flow, FlowModule(flow, training),
                *loaders((train_in,), (_inputs(samples, "val", proc),), training, seed))

    return fit_per_process(processes, training, seed, label, log, build, log_dir, callbacks)
