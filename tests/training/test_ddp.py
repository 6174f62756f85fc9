"""Real 2-process DDP on CPU (gloo, spawned processes): the same quality as one process."""

import dataclasses

import numpy as np
import pytest
import torch
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

from hsbi.config import TrainingConfig, load_config
from hsbi.data import simulate_training_samples, training_arrays
from hsbi.training import train_lre_member
from hsbi.training.fit import strategy_for


def _quiet(_: str) -> None:  # module level: picklable into the spawned processes
    pass


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    cfg = load_config("default", ["simulation.n_train=6000", "simulation.n_val=5000",
                                  "training.max_epochs=3"])
    model = cfg.model.build()
    samples = simulate_training_samples(model, cfg)
    runs = {}
    for devices in (1, 2):
        training = dataclasses.replace(cfg.training, devices=devices)
        log_dir = tmp_path_factory.mktemp(f"logs{devices}")
        nets, history = train_lre_member(samples, ("signal",), cfg.estimator, training, seed=4,
                                         log=_quiet, log_dir=log_dir)
        runs[devices] = nets["signal"], history["signal"], log_dir
    return cfg, model, samples, runs


def _per_event_bce(logit: np.ndarray, y: np.ndarray) -> np.ndarray:
    return torch.nn.functional.binary_cross_entropy_with_logits(
        torch.as_tensor(logit, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64),
        reduction="none").numpy()


def test_ddp_matches_single_process_quality(fits):
    """Excess validation BCE over the Bayes-optimal logit: DDP and one process agree within
    3 standard errors of the validation BCE estimate (std of the per-event BCE / sqrt(n)).
    The global batch is split across the two processes, so the two fits are the same up to
    floating-point order; the bound is the statistical one all the same."""
    cfg, model, samples, runs = fits
    x, z, y = training_arrays(samples, "val", "signal")
    c = model.processes.index("signal")
    num = -0.5 * ((x - model.means(z)[:, c]) ** 2).sum(1) - np.log(2 * np.pi)
    z0 = cfg.model.nuisance_reference
    ref = np.log(np.exp(model.log_components(x, np.array([z0]))[0]).mean(-1))
    bayes = _per_event_bce(num - ref, y).mean()
    excess, se = {}, {}
    for devices, (net, history, _) in runs.items():
        with torch.no_grad():
            per_event = _per_event_bce(net(torch.as_tensor(np.c_[x, z], dtype=torch.float32)).numpy(), y)
        excess[devices] = per_event.mean() - bayes
        se[devices] = per_event.std() / np.sqrt(len(per_event))
        # the returned net is the trained one (rank 0's): its BCE is the last logged val_loss
        assert per_event.mean() == pytest.approx(history[-1]["val_loss"], abs=1e-5)
        assert len(history) == cfg.training.max_epochs
        assert history[-1]["val_loss"] < history[0]["val_loss"]  # it trains
    assert abs(excess[2] - excess[1]) < 3 * se[1], (excess, se)


def test_ddp_rank_zero_writes_the_csv_log(fits):
    *_, runs = fits
    for _, history, log_dir in runs.values():
        lines = (log_dir / "signal" / "metrics.csv").read_text().splitlines()
        assert lines[0].split(",") == ["epoch", "lr", "step", "train_loss", "val_loss"]
        assert len(lines) == 1 + len(history)


def test_slurm_job_steps_use_lightnings_slurm_environment(monkeypatch):
    """Inside ``srun`` with devices x nodes tasks: SLURMEnvironment, processes made by srun
    (nothing re-executed); a SLURM job with another task count spawns its processes locally."""
    for key, value in {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "hsbi",
                       "SLURM_NODELIST": "node[1-2]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                       "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    strategy = strategy_for(TrainingConfig(devices=2, nodes=2))
    assert isinstance(strategy.cluster_environment, SLURMEnvironment)
    assert strategy.cluster_environment.creates_processes_externally
    monkeypatch.setenv("SLURM_NTASKS", "1")
    strategy = strategy_for(TrainingConfig(devices=2))
    assert isinstance(strategy.cluster_environment, LightningEnvironment)
    assert strategy_for(TrainingConfig(devices=1)) == "auto"
