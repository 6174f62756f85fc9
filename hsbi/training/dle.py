"""Training one DLE ensemble member (one conditional flow per process) with Lightning."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import numpy as np
import torch

from hsbi.config import EstimatorConfig, TrainingConfig
from hsbi.estimators import FlowNet
from hsbi.exceptions import DataError
from hsbi.training.data import batch_loader
from hsbi.training.lre import _EpochReport, _trainer

__all__ = ["FlowModule", "train_dle_member"]


class FlowModule(L.LightningModule):
    """Maximum likelihood: the loss is ``-log p(x | z)`` averaged over the batch."""

    def __init__(self, flow: FlowNet, cfg: TrainingConfig) -> None:
        super().__init__()
        self.flow = flow
        self.cfg = cfg

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        (inputs,) = batch
        loss = -self.flow.log_prob(inputs).mean()
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=len(inputs))
        return loss  # a flow step dwarfs the logging cost, unlike the small LRE classifier

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self._step(batch, "val")

    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.learning_rate,
                               weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.max_epochs)
        return [opt], [sched]


def _inputs(samples: dict[str, np.ndarray], split: str, proc: str) -> torch.Tensor:
    try:
        x, z = samples[f"{split}_{proc}_x"], samples[f"{split}_{proc}_z"]
    except KeyError as err:
        raise DataError(f"training samples have no array {err.args[0]!r}") from None
    if len(x) == 0:
        raise DataError(f"the {split} split for process {proc!r} is empty")
    return torch.as_tensor(np.concatenate([x, z[:, None]], axis=1), dtype=torch.float32)


def train_dle_member(
    samples: dict[str, np.ndarray],
    processes: tuple[str, ...],
    estimator: EstimatorConfig,
    training: TrainingConfig,
    seed: int,
    label: str = "member",
    log: Callable[[str], None] = print,
) -> tuple[dict[str, FlowNet], dict[str, list[dict[str, float]]]]:
    """Fit ``p_c(x | z)`` to each process's numerator sample; returns flows and histories."""
    flows, history = {}, {}
    for c, proc in enumerate(processes):
        L.seed_everything(seed * 1000 + c, verbose=False)
        train_in, val_in = _inputs(samples, "train", proc), _inputs(samples, "val", proc)
        flow = FlowNet(train_in.shape[1] - 1, estimator.widths, estimator.transforms)
        flow.set_standardisation(train_in)
        report = _EpochReport(f"{label} {proc}", log)
        _trainer(training, report).fit(
            FlowModule(flow, training),
            train_dataloaders=batch_loader(train_in, batch_size=training.batch_size, shuffle=True, seed=seed),
            val_dataloaders=batch_loader(val_in, batch_size=8192, shuffle=False),
        )
        flows[proc] = flow.eval()
        history[proc] = report.history
    return flows, history
