"""Training one LRE ensemble member (one classifier per process) with a Lightning Trainer."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from hsbi.config import EstimatorConfig, TrainingConfig
from hsbi.data import training_arrays
from hsbi.estimators import RatioNet
from hsbi.exceptions import FitError
from hsbi.training.data import batch_loader

__all__ = ["ClassifierModule", "fit_per_process", "train_lre_member"]

for _name in ("lightning", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# two of Lightning's warnings that say nothing to an hsbi user: a torch-internal deprecation, and
# a hint to use srun whenever SLURM's client is installed (hsbi submits jobs through law instead)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system.*")


class _Module(L.LightningModule):
    """Shared by hsbi's estimators: subclasses give ``loss_of(batch)``. Losses are accumulated
    and logged once per epoch (per-step ``self.log`` costs more than a small network's step);
    Adam (fused) with cosine decay over ``max_epochs``."""

    def __init__(self, net: nn.Module, cfg: TrainingConfig) -> None:
        super().__init__()
        self.net = net
        self.cfg = cfg
        self._sums: dict[str, list[torch.Tensor | int]] = {}

    def loss_of(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        loss = self.loss_of(batch)
        total = self._sums.setdefault(stage, [torch.zeros(()), 0])
        total[0] = total[0] + loss.detach() * len(batch[0])
        total[1] += len(batch[0])
        return loss

    def _log_epoch(self, stage: str) -> None:
        total = self._sums.pop(stage, None)
        if total and total[1]:
            self.log(f"{stage}_loss", total[0] / total[1])

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        # runs before the callbacks' on_train_epoch_end: both losses are there for the report
        self._log_epoch("train")
        self._log_epoch("val")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")  # when there is no validation loop

    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.Adam(
            self.parameters(), lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay,
            fused=True,
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.max_epochs)
        return [opt], [sched]


class ClassifierModule(_Module):
    """Binary cross-entropy on logits."""

    loss = nn.BCEWithLogitsLoss()

    def loss_of(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        inputs, target = batch
        return self.loss(self.net(inputs), target)


class _EpochReport(L.Callback):
    """Prints one line per epoch and stops with a clear error when the loss is not finite."""

    def __init__(self, label: str, log: Callable[[str], None]) -> None:
        self.label = label
        self.emit = log
        self.history: list[dict[str, float]] = []
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        epoch = trainer.current_epoch + 1
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FitError(f"{self.label}: loss became non-finite in epoch {epoch} ({metrics})")
        self.history.append({"epoch": epoch, **metrics})
        self.emit(
            f"{self.label}: epoch {epoch}/{trainer.max_epochs} "
            f"train_loss {metrics.get('train_loss', float('nan')):.4f} "
            f"val_loss {metrics.get('val_loss', float('nan')):.4f} "
            f"({time.perf_counter() - self.start:.1f}s)"
        )


def _trainer(training: TrainingConfig, report: L.Callback) -> L.Trainer:
    """A quiet single-process CPU Trainer that reports each epoch through ``report``."""
    return L.Trainer(
        max_epochs=training.max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=[report],
    )


def _tensors(samples: dict[str, np.ndarray], split: str, proc: str) -> tuple[torch.Tensor, ...]:
    x, z, y = training_arrays(samples, split, proc)
    inputs = torch.as_tensor(np.concatenate([x, z[:, None]], axis=1), dtype=torch.float32)
    return inputs, torch.as_tensor(y)


def fit_per_process(
    processes: tuple[str, ...],
    training: TrainingConfig,
    seed: int,
    label: str,
    log: Callable[[str], None],
    build: Callable[[str], tuple[nn.Module, L.LightningModule, Any, Any]],
) -> tuple[dict[str, nn.Module], dict[str, list[dict[str, float]]]]:
    """For each process (seeded ``seed * 1000 + index``): ``build(process)`` gives the net, its
    module and the train and validation loaders; fit them; return nets and per-epoch metrics."""
    nets, history = {}, {}
    for c, proc in enumerate(processes):
        L.seed_everything(seed * 1000 + c, verbose=False)
        net, module, train_loader, val_loader = build(proc)
        report = _EpochReport(f"{label} {proc}", log)
        _trainer(training, report).fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
        nets[proc] = net.eval()
        history[proc] = report.history
    return nets, history


def train_lre_member(
    samples: dict[str, np.ndarray],
    processes: tuple[str, ...],
    estimator: EstimatorConfig,
    training: TrainingConfig,
    seed: int,
    label: str = "member",
    log: Callable[[str], None] = print,
) -> tuple[dict[str, RatioNet], dict[str, list[dict[str, float]]]]:
    """Train one classifier per process; returns the nets and their per-epoch metrics."""

    def build(proc: str) -> tuple[RatioNet, ClassifierModule, Any, Any]:
        train_in, train_y = _tensors(samples, "train", proc)
        val_in, val_y = _tensors(samples, "val", proc)
        net = RatioNet(train_in.shape[1] - 1, estimator.widths, estimator.activation)
        net.set_standardisation(train_in)
        return (
            net,
            ClassifierModule(net, training),
            batch_loader(train_in, train_y, batch_size=training.batch_size, shuffle=True, seed=seed),
            batch_loader(val_in, val_y, batch_size=8192, shuffle=False),
        )

    return fit_per_process(processes, training, seed, label, log, build)
