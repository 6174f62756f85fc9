"""Fitting hsbi's estimators with a Lightning Trainer: the shared module (several optimiser steps
per Lightning step), the per-epoch report, loggers, and single- or multi-process (DDP) runs on
CPU or GPU (``training.accelerator``), in full or mixed precision (``training.precision``), with
optional gradient clipping (``training.gradient_clip_val``).

In full precision without clipping the module steps the torch optimiser directly (Lightning's
per-step hooks cost as much as a small MLP's step). Otherwise every step goes through Lightning:
``manual_backward`` (the precision plugin scales the loss for 16-mixed; DDP all-reduces), the
plugin's optimiser step (AMP's unscaling, then ``on_before_optimizer_step``, where the gradients
are clipped, then the scaler's step and update), the forward in the plugin's autocast context.

Distributed training (``training.devices > 1`` or ``training.nodes > 1``) uses DDP over gloo
on CPU. Lightning's default ``ddp`` launcher re-executes ``sys.argv`` for every extra process,
which inside a law task would re-run ``law run`` itself; hsbi therefore never uses it on one
machine: ``training.strategy`` ``ddp`` (and ``auto``) and ``ddp_spawn`` start the processes
with ``multiprocessing`` *spawn* (fresh interpreters that import hsbi and receive the Trainer,
module and data pickled: safe in any host process), ``ddp_fork`` with *fork* (faster to start,
but forking a process that has run OpenMP threads can hang). Lightning sends rank 0's weights
and metrics back to the calling process, so the returned nets are rank 0's.

Under SLURM, Lightning's ``SLURMEnvironment`` is used when the job step has exactly
``devices x nodes`` tasks: start the command with ``srun --nodes <nodes> --ntasks-per-node
<devices>`` (e.g. ``#SBATCH --nodes=2 --ntasks-per-node=4`` and ``training.devices: 4,
training.nodes: 2``); each task is one process of the run and nothing is re-executed. A SLURM
job with a different number of tasks (say one task with several CPUs) runs the processes
locally with spawn, like on a workstation.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import pickle
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from hsbi.config import TrainingConfig
from hsbi.exceptions import ConfigError, FitError

__all__ = ["STEPS_PER_CALL", "EstimatorModule", "accelerator_for", "check_logger", "fit_per_process", "fused_adam",
           "make_trainer", "strategy_for"]

#: Optimiser steps per Lightning training step (mini-batches per block of the batch loader):
#: amortises Lightning's per-step overhead (about 1 ms), which a small MLP's step does not.
STEPS_PER_CALL = 32

for _name in ("lightning", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Lightning warnings that say nothing to an hsbi user: a torch-internal deprecation; a hint to
# use srun whenever SLURM's client is installed (hsbi decides, see above); per-epoch losses are
# already summed over the processes before they are logged (no sync_dist needed)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system.*")
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")

#: ``training.strategy`` -> how the processes of a local DDP run start.
START_METHODS = {"auto": "spawn", "ddp": "spawn", "ddp_spawn": "spawn", "ddp_fork": "fork"}
#: ``training.logger`` -> (the Python module it needs, its pip package), if any.
LOGGER_PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
                   "mlflow": (("mlflow",), "mlflow")}


class EstimatorModule(L.LightningModule):
    """Shared by hsbi's estimators: subclasses give ``loss_of(batch)``.

    Each training step gets a block of mini-batches (see :class:`~hsbi.training.data.ShuffledBatches`)
    and takes one Adam step (fused) per mini-batch (manual optimisation); the learning rate decays
    with a cosine over ``max_epochs``, stepped per epoch. Losses are summed per epoch, summed
    over the processes of a distributed run, and logged once per epoch as ``train_loss``,
    ``val_loss`` (the mean over all rows) and ``lr``.
    """

    def __init__(self, net: nn.Module, cfg: TrainingConfig) -> None:
        super().__init__()
        self.net = net
        self.cfg = cfg
        self.automatic_optimization = False
        self._sums: dict[str, list[torch.Tensor | int]] = {}

    def loss_of(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The mean loss (scalar) of one mini-batch."""
        raise NotImplementedError

    def _accumulate(self, stage: str, loss: torch.Tensor, rows: int) -> None:
        total = self._sums.setdefault(stage, [torch.zeros((), device=loss.device), 0])
        total[0] = total[0] + loss.detach().float() * rows
        total[1] += rows

    def _log_epoch(self, stage: str) -> None:
        total = self._sums.pop(stage, None)
        if total is None:
            return
        sums = torch.stack([total[0], torch.tensor(float(total[1]), device=total[0].device)])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        self.log(f"{stage}_loss", sums[0] / sums[1])
        if stage == "train":
            self.log("lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]))

    @property
    def _plain(self) -> bool:
        """Full precision and no clipping: the optimiser is stepped directly (the fast path)."""
        return self.cfg.precision == "32" and self.cfg.gradient_clip_val == 0

    def training_step(self, block, batch_idx):  # noqa: ANN001, ANN201
        if not self._plain:
            # through Lightning: the backward by the precision plugin (the loss scaled for
            # 16-mixed) and the strategy (DDP's all-reduce), the step by the plugin (unscaling,
            # then on_before_optimizer_step clips, then the scaler's step and update); the
            # forward runs in the plugin's autocast context (Lightning's training_step wrapper)
            opt = self.optimizers()
            for batch in block:
                loss = self.loss_of(batch)
                self._accumulate("train", loss, len(batch[0]))
                opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                opt.step()
            return
        # straight on the torch optimiser: Lightning's per-call hooks (on_before/after_backward,
        # on_before_optimizer_step) would cost as much as a small MLP's step. Under DDP the
        # backward goes through Lightning, which prepares the gradients' all-reduce (averaging).
        opt = self.optimizers().optimizer
        backward = self.manual_backward if self.trainer.world_size > 1 else torch.Tensor.backward
        for batch in block:
            loss = self.loss_of(batch)
            self._accumulate("train", loss, len(batch[0]))
            opt.zero_grad(set_to_none=True)
            backward(loss)
            opt.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # called by the precision plugin's step after AMP's unscaling (so the clip sees the true
        # gradients) and after DDP's all-reduce (every process clips the same averaged gradients)
        if self.cfg.gradient_clip_val > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.gradient_clip_val,
                                gradient_clip_algorithm=self.cfg.gradient_clip_algorithm)

    def validation_step(self, block, batch_idx):  # noqa: ANN001, ANN201
        for batch in block:
            self._accumulate("val", self.loss_of(batch), len(batch[0]))

    def on_validation_epoch_end(self) -> None:
        # runs before the callbacks' on_train_epoch_end: both losses are there for the report
        self._log_epoch("train")
        self._log_epoch("val")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")  # when there is no validation loop
        self.lr_schedulers().step()

    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.Adam(
            self.parameters(), lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay,
            fused=fused_adam(self.cfg),
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.max_epochs)
        return [opt], [sched]


def fused_adam(training: TrainingConfig) -> bool:
    """Whether hsbi's Adam steps fused: fused Adam unscales inside its step, and Lightning's
    mixed-precision plugins refuse to clip the gradients of such an optimiser (they would be
    clipped scaled), so with mixed precision and clipping the step is not fused."""
    return not (training.precision != "32" and training.gradient_clip_val > 0)


class _EpochReport(L.Callback):
    """One line per epoch from rank 0 (with the seconds since the training started) and the
    metrics history; a non-finite loss stops the fit at the end of its epoch with a message.
    Rank 0 writes ``{history, error}`` as JSON to ``path`` when the fit ends (the calling
    process reads it back: with spawned processes this callback's state stays in them)."""

    def __init__(self, label: str, log: Callable[[str], None], path: Path) -> None:
        self.label, self.emit, self.path = label, log, path
        self.history: list[dict[str, float]] = []
        self.error: str | None = None
        self.start = time.perf_counter()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        try:
            pickle.dumps(self.emit)
        except (pickle.PicklingError, AttributeError, TypeError):
            state["emit"] = print  # a spawned process cannot call back into a local function
        return state

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()  # after the processes of a DDP run have started

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        epoch = trainer.current_epoch + 1
        if not all(math.isfinite(v) for v in metrics.values()):
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.error = (
                f"{self.label}: the loss became non-finite in epoch {epoch} at learning rate {lr:.3g} "
                f"({', '.join(f'{k} {v:.4g}' for k, v in metrics.items())}); "
                f"try a lower training.learning_rate (now {module.cfg.learning_rate:g})"
            )
            trainer.should_stop = True
            return
        self.history.append({"epoch": epoch, **metrics})  # no times: artifacts must reproduce
        if trainer.is_global_zero:
            self.emit(
                f"{self.label}: epoch {epoch}/{trainer.max_epochs} "
                f"train_loss {metrics.get('train_loss', float('nan')):.4f} "
                f"val_loss {metrics.get('val_loss', float('nan')):.4f} "
                f"({time.perf_counter() - self.start:.1f}s)"
            )

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.write_text(json.dumps({"history": self.history, "error": self.error}))


def check_logger(training: TrainingConfig) -> None:
    """A ConfigError naming ``training.logger`` and its pip package if that is not installed."""
    modules, package = LOGGER_PACKAGES.get(training.logger, ((), ""))
    if modules and not any(importlib.util.find_spec(m) for m in modules):
        raise ConfigError(
            f"config key 'training.logger' = {training.logger!r}: needs the Python package "
            f"'{package}' (pip install {package}), or use csv"
        )


def _logger(training: TrainingConfig, log_dir: Path | None, label: str, proc: str) -> Any:
    """Lightning logger writing ``log_dir/<proc>/`` (csv: ``metrics.csv``; tensorboard: event
    files; mlflow: ``$MLFLOW_TRACKING_URI`` or ``log_dir/mlruns``); none without ``log_dir``."""
    if training.logger == "none" or log_dir is None:
        return False
    if training.logger == "csv":
        return L.pytorch.loggers.CSVLogger(log_dir, name="", version=proc)
    if training.logger == "tensorboard":
        return L.pytorch.loggers.TensorBoardLogger(log_dir, name="", version=proc)
    return L.pytorch.loggers.MLFlowLogger(
        experiment_name=label, run_name=proc, save_dir=str(log_dir / "mlruns")
    )


def accelerator_for(training: TrainingConfig) -> str:
    """``cpu`` or ``gpu``: ``training.accelerator``, ``auto`` resolved by what torch sees. A GPU
    asked for where none is visible, or 16-mixed without one, is a one-line ConfigError."""
    gpu = torch.cuda.is_available()
    if training.accelerator == "gpu" and not gpu:
        raise ConfigError("config key 'training.accelerator' = 'gpu': no GPU is visible to this process "
                          "(torch.cuda.is_available() is False); expected cpu or auto here, or a GPU node "
                          "([hsbi_jobs] gpus for batch jobs)")
    resolved = "gpu" if training.accelerator == "gpu" or (training.accelerator == "auto" and gpu) else "cpu"
    if training.precision == "16-mixed" and resolved == "cpu":
        raise ConfigError("config key 'training.precision' = '16-mixed': float16 mixed precision needs a GPU and "
                          "none is visible; expected 32 or bf16-mixed on CPU")
    return resolved


def strategy_for(training: TrainingConfig) -> Any:
    """``auto`` for one process; otherwise DDP over gloo (nccl on GPUs), launched as the module
    docstring says."""
    world = training.devices * training.nodes
    if world == 1:
        return "auto"
    backend = "nccl" if accelerator_for(training) == "gpu" else "gloo"
    if SLURMEnvironment.detect() and int(os.environ["SLURM_NTASKS"]) == world:
        return DDPStrategy(cluster_environment=SLURMEnvironment(), start_method="popen",
                           process_group_backend=backend)
    if training.nodes > 1:
        raise ConfigError(
            f"config key 'training.nodes' = {training.nodes}: expected 1 outside a SLURM job step "
            f"of devices x nodes = {world} tasks (srun --nodes {training.nodes} "
            f"--ntasks-per-node {training.devices})"
        )
    return DDPStrategy(cluster_environment=LightningEnvironment(),
                       start_method=START_METHODS[training.strategy], process_group_backend=backend)


def make_trainer(training: TrainingConfig, callbacks: list[L.Callback], logger: Any = False) -> L.Trainer:
    """A quiet Trainer for ``training.max_epochs`` on ``training.devices`` processes (CPU) or
    GPUs per node, in ``training.precision``."""
    return L.Trainer(
        max_epochs=training.max_epochs,
        accelerator=accelerator_for(training),
        precision=training.precision if training.precision != "32" else "32-true",
        devices=training.devices,
        num_nodes=training.nodes,
        strategy=strategy_for(training),
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def fit_per_process(
    processes: tuple[str, ...],
    training: TrainingConfig,
    seed: int,
    label: str,
    log: Callable[[str], None],
    build: Callable[[str], tuple[nn.Module, L.LightningModule, Any, Any]],
    log_dir: Path | None = None,
    callbacks: Callable[[str], list[L.Callback]] | None = None,
) -> tuple[dict[str, nn.Module], dict[str, list[dict[str, float]]]]:
    """For each process (seeded ``seed * 1000 + index``): ``build(process)`` gives the net, its
    module and the train and validation loaders; fit them; return nets and per-epoch metrics.

    ``log_dir``: where ``training.logger`` writes (``log_dir/<process>/``); no logger if None.
    ``callbacks(process)``: more Lightning callbacks for that process's Trainer (after the
    report, which logs ``train_loss``, ``val_loss`` and ``lr`` before ``on_train_epoch_end``).
    Raises :class:`FitError` when a loss becomes non-finite (at the end of that epoch).
    """
    check_logger(training)
    nets, history = {}, {}
    for c, proc in enumerate(processes):
        L.seed_everything(seed * 1000 + c, verbose=False)
        net, module, train_loader, val_loader = build(proc)
        with tempfile.TemporaryDirectory(prefix="hsbi-fit-") as tmp:
            report = _EpochReport(f"{label} {proc}", log, Path(tmp) / "report.json")
            extra = callbacks(proc) if callbacks else []
            trainer = make_trainer(training, [report, *extra], _logger(training, log_dir, label, proc))
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
            # rank 0 writes the report; under SLURM every rank is a calling process of its own
            result = json.loads(report.path.read_text()) if report.path.exists() else \
                {"history": report.history, "error": report.error}
        if result["error"]:
            raise FitError(result["error"])
        nets[proc] = net.cpu().eval()  # from a GPU back to the host: evaluation and saving run there
        history[proc] = result["history"]
    return nets, history
