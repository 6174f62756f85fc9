"""Training one LRE ensemble member (one classifier per process) with a Lightning Trainer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from hsbi.config import EstimatorConfig, TrainingConfig
from hsbi.data import training_arrays
from hsbi.estimators import RatioNet
from hsbi.training.data import batch_loader
from hsbi.training.fit import STEPS_PER_CALL, EstimatorModule, fit_per_process

__all__ = ["ClassifierModule", "train_lre_member"]

#: Rows per validation batch (no gradients: large batches are cheaper).
VAL_BATCH = 8192


class ClassifierModule(EstimatorModule):
    """Binary cross-entropy on logits."""

    loss = nn.BCEWithLogitsLoss()

    def loss_of(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        inputs, target = batch
        return self.loss(self.net(inputs), target)


def _tensors(samples: dict[str, np.ndarray], split: str, proc: str) -> tuple[torch.Tensor, ...]:
    x, z, y = training_arrays(samples, split, proc)
    inputs = torch.as_tensor(np.concatenate([x, z[:, None]], axis=1), dtype=torch.float32)
    return inputs, torch.as_tensor(y)


def loaders(
    train: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...], training: TrainingConfig, seed: int
) -> tuple[Any, Any]:
    """The training loader (shuffled, blocks of ``STEPS_PER_CALL`` batches) and the validation
    loader (in order) over tensors whose first dimension is the row."""
    return (
        batch_loader(*train, batch_size=training.batch_size, shuffle=True, seed=seed, block=STEPS_PER_CALL),
        batch_loader(*val, batch_size=VAL_BATCH, shuffle=False),
    )


def train_lre_member(
    samples: dict[str, np.ndarray],
    processes: tuple[str, ...],
    estimator: EstimatorConfig,
    training: TrainingConfig,
    seed: int,
    label: str = "member",
    log: Callable[[str], None] = print,
    log_dir: Path | None = None,
    callbacks: Callable[[str], list[L.Callback]] | None = None,
) -> tuple[dict[str, RatioNet], dict[str, list[dict[str, float]]]]:
    """Train one classifier per process; returns the nets and their per-epoch metrics
    (``training.logger`` writes under ``log_dir/<process>/`` if given; ``callbacks(process)``:
    more Lightning callbacks, see :func:`~hsbi.training.fit.fit_per_process`)."""

    def build(proc: str) -> tuple[RatioNet, ClassifierModule, Any, Any]:
        train = _tensors(samples, "train", proc)
        net = RatioNet(train[0].shape[1] - 1, estimator.widths, estimator.activation)
        net.set_standardisation(train[0])
        return (net, ClassifierModule(net, training),
                *loaders(train, _tensors(samples, "val", proc), training, seed))

    return fit_per_process(processes, training, seed, label, log, build, log_dir, callbacks)
