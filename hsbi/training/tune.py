"""Hyper-parameter search with Ray Tune and the ASHA scheduler, scored on NSBI closure.

Each trial draws values of the dotted config keys in ``tune.space`` (see
:mod:`hsbi.config.tune`), trains one ensemble member with the configured trainer
(:data:`hsbi.training.TRAINERS`) for ``tune.max_epochs`` epochs with seed ``tune.seed``, and
reports after every epoch, from a Lightning callback, the validation loss and, for ratio
estimators (``lre``), the closure of the validation split: the reference sample reweighted by
``r_c(x, z)`` against each process's numerator (:func:`hsbi.diagnostics.closure.closure_metrics`:
mean chi2/ndf and mean 1-D Wasserstein distance). ASHA stops the trials that are behind at its
rungs; the objective (``tune.objective``, default closure) is minimised.

A member's per-process classifiers are trained one after another, so a trial's iterations are
the member's epochs counted over its classifiers (``C * tune.max_epochs`` for ``C`` processes);
the metrics of an iteration are the means over the classifiers trained so far (the finished
ones at their last epoch). All trials train the processes in the same order, so ASHA compares
trials in the same state, and a trial's last report scores the whole member.

Reproducibility: the draws from the space are seeded (``tune.seed``) and every trial trains with
the same seed on one Ray worker with ``tune.cpus_per_trial`` torch threads, so each trial's
reports are reproducible on one machine. With ``tune.max_concurrent: 1`` the ASHA decisions, and
so the whole result, are too; with concurrent trials they depend on which trial reaches a rung
first, so which trials are stopped early (and, rarely, the best trial) may change between runs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch

from hsbi.config import AnalysisConfig
from hsbi.config.tune import OBJECTIVES, apply_tuned, check_ray_address
from hsbi.data import numerator_arrays, training_arrays
from hsbi.diagnostics.closure import closure_metrics
from hsbi.exceptions import ConfigError, FitError
from hsbi.training import TRAINERS

__all__ = ["TuneResult", "save_tune_result", "tune_hyperparameters"]

#: per-epoch metrics reported by every trial (the closure ones for ratio estimators only)
METRICS = ("val_loss", "closure_chi2_ndf", "closure_wasserstein")


@dataclass(frozen=True)
class TuneResult:
    """The outcome of a search.

    Attributes:
        best: the best trial's values by dotted config key (JSON-able; feed to
            :func:`hsbi.config.tune.apply_tuned`).
        metrics: the best trial's metrics at its last iteration, and its ``trial`` index.
        trials: one row per trial (in the order drawn): ``trial``, ``status`` (completed,
            stopped by ASHA, or error), ``iterations``, the values drawn and the last metrics.
        history: one row per trial and iteration: ``trial``, ``iteration``, ``process``, metrics.
        objective: the name of the minimised metric.
    """

    best: dict[str, Any]
    metrics: dict[str, Any]
    trials: list[dict[str, Any]]
    history: list[dict[str, Any]]
    objective: str


def _plain(value: Any) -> Any:
    """JSON-native values: NumPy scalars to Python, tuples to lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Scores:
    """Per-process metrics of one trial; the latest epoch's values of every process so far."""

    def __init__(self, samples: Mapping[str, np.ndarray], closure: bool, report: Callable[[dict], None]) -> None:
        self.samples, self.closure, self.report = samples, closure, report
        self.latest: dict[str, dict[str, float]] = {}

    def closure_of(self, proc: str, net: torch.nn.Module) -> dict[str, float]:
        """Closure of one classifier on the validation split."""
        x_ref, z_ref = self.samples["val_reference_x"], self.samples["val_reference_z"]
        was_training = net.training
        net.eval()
        with torch.inference_mode():
            logit = net(torch.as_tensor(np.c_[x_ref, z_ref], dtype=torch.float32)).double().numpy()
        net.train(was_training)
        weights = np.exp(np.clip(logit, -50.0, 50.0))  # a diverged net scores badly, not NaN
        return closure_metrics({proc: self.samples[f"val_{proc}_x"]}, x_ref, {proc: weights})

    def epoch_end(self, proc: str, trainer: L.Trainer, module: L.LightningModule) -> None:
        metrics = {"val_loss": float(trainer.callback_metrics["val_loss"])}
        if self.closure:
            metrics |= self.closure_of(proc, module.net)
        self.latest[proc] = metrics
        means = {k: float(np.mean([m[k] for m in self.latest.values()])) for k in metrics}
        self.report({**means, "process": proc, "epoch": trainer.current_epoch + 1})

    def callbacks(self, proc: str) -> list[L.Callback]:
        """The Lightning callback of ``proc``'s Trainer."""
        return [_EpochEnd(self, proc)]


class _EpochEnd(L.Callback):
    """Hands every finished epoch of one process's classifier to the trial's :class:`_Scores`."""

    def __init__(self, scores: _Scores, proc: str) -> None:
        self.scores, self.proc = scores, proc

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.scores.epoch_end(self.proc, trainer, module)


def _trial(params: dict[str, Any], cfg: AnalysisConfig, samples: dict[str, np.ndarray],
           processes: tuple[str, ...]) -> None:
    """One Ray Tune trial: one member trained with ``params`` applied, reporting every epoch."""
    from ray import tune

    torch.set_num_threads(cfg.tune.cpus_per_trial)
    trial_cfg = apply_tuned(cfg, params)
    # one process in this Ray worker: no DDP inside a trial
    training = dataclasses.replace(trial_cfg.training, max_epochs=cfg.tune.max_epochs, devices=1, nodes=1)
    scores = _Scores(samples, trial_cfg.estimator.kind == "lre", tune.report)
    TRAINERS[trial_cfg.estimator.kind](
        samples, processes, trial_cfg.estimator, training, seed=cfg.tune.seed, label="trial",
        log=lambda line: None, callbacks=scores.callbacks,
    )


def _trial_samples(samples: Mapping[str, np.ndarray], processes: tuple[str, ...], kind: str,
                   n: int) -> dict[str, np.ndarray]:
    """The first ``n`` training events of every array (all for ``n = 0``), all validation
    events; checked up front so that missing arrays fail here and not inside a trial."""
    out = {k: (v[:n] if n and k.startswith("train_") else v) for k, v in samples.items()}
    for split in ("train", "val"):
        for proc in processes:
            (training_arrays if kind == "lre" else numerator_arrays)(out, split, proc)
    return out


@contextmanager
def _ray(address: str | None, cpus: int) -> Iterator[None]:
    """Ray for the search: the cluster at ``address``, or a local one with ``cpus`` CPUs; left
    as found when Ray is already initialised in this process."""
    import ray

    if ray.is_initialized():
        yield
        return
    check_ray_address(address)
    local = {"num_cpus": cpus, "include_dashboard": False} if address in (None, "local") else {}
    try:  # "local": a new Ray even where an earlier `ray start` left its address behind
        ray.init(address=address or "local", log_to_driver=False, logging_level=logging.WARNING, **local)
    except ConnectionError as err:
        raise ConfigError(f"--ray-address {address!r}: {err} (a cluster with token authentication "
                          "also needs RAY_AUTH_MODE=token and its token, e.g. RAY_AUTH_TOKEN_PATH)") from None
    try:
        yield
    finally:
        ray.shutdown()


def _progress_callback(progress: Callable[[str], None], metric: str):  # -> ray.tune.Callback
    """A Ray Tune callback (on the driver) with one line per finished trial."""
    from ray import tune

    class _Progress(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info) -> None:  # noqa: ANN001
            last = trial.last_result or {}
            values = ", ".join(f"{k} {_plain(v)}" for k, v in trial.config.items())
            progress(f"tune: trial {trials.index(trial)} ({values}): {last.get('training_iteration', 0)} "
                     f"iterations, {metric} {last.get(metric, float('nan')):.4g}")

    return _Progress()


def _fit(cfg: AnalysisConfig, samples: dict[str, np.ndarray], processes: tuple[str, ...],
         storage: str, progress: Callable[[str], None]):  # -> ray.tune.ResultGrid
    """Run the search (Ray initialised) and return Ray's results."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    tcfg = cfg.tune
    dists = {"loguniform": tune.loguniform, "uniform": tune.uniform,
             "randint": lambda lo, hi: tune.randint(lo, hi + 1)}
    space = {k: tune.choice(list(d[1])) if d[0] == "choice" else dists[d[0]](*d[1:]) for k, d in tcfg.space.items()}
    max_t = len(processes) * tcfg.max_epochs
    trainable = tune.with_parameters(_trial, cfg=cfg, samples=samples, processes=processes)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": tcfg.cpus_per_trial}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=OBJECTIVES[tcfg.objective], mode="min", num_samples=tcfg.trials,
            reuse_actors=True,
            search_alg=BasicVariantGenerator(random_state=tcfg.seed, max_concurrent=tcfg.max_concurrent),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                    grace_period=min(tcfg.grace_period, max_t),
                                    reduction_factor=tcfg.reduction_factor),
        ),
        run_config=tune.RunConfig(storage_path=storage, name="tune", verbose=0,
                                  callbacks=[_progress_callback(progress, OBJECTIVES[tcfg.objective])]),
    )
    return tuner.fit()


def _summarise(grid: Any, metric: str, max_t: int) -> TuneResult:
    """Trials, per-iteration history and the best trial: the lowest last ``metric`` among the
    error-free trials that ran longest (ASHA's survivors)."""
    trials, history = [], []
    for i, result in enumerate(grid):
        df = result.metrics_dataframe
        reports = [] if df is None else df.to_dict("records")
        rows = [{"trial": i, "iteration": int(r["training_iteration"]), "process": r.get("process"),
                 **{k: float(r[k]) for k in METRICS if k in r}} for r in reports]
        history += rows
        last = {k: v for k, v in (rows[-1] if rows else {}).items() if k in METRICS}
        status = "error" if result.error else "completed" if len(rows) >= max_t else "stopped"
        trials.append({"trial": i, "status": status, "iterations": len(rows),
                       **{k: _plain(v) for k, v in result.config.items()}, **last})
    ok = [t for t in trials if t["status"] != "error" and math.isfinite(t.get(metric, math.nan))]
    if not ok:
        errors = [str(r.error).strip().splitlines()[-1] for r in grid if r.error]
        raise FitError(f"tune: none of the {len(trials)} trials finished ({errors[0] if errors else 'no reports'})")
    longest = max(t["iterations"] for t in ok)
    best = min((t for t in ok if t["iterations"] == longest), key=lambda t: (t[metric], t["trial"]))
    params = {k: _plain(v) for k, v in grid[best["trial"]].config.items()}
    metrics = {"trial": best["trial"], "iterations": best["iterations"], **{k: best[k] for k in METRICS if k in best}}
    return TuneResult(best=params, metrics=metrics, trials=trials, history=history, objective=metric)


def tune_hyperparameters(
    samples: Mapping[str, np.ndarray],
    processes: tuple[str, ...],
    cfg: AnalysisConfig,
    ray_address: str | None = None,
    progress: Callable[[str], None] = print,
) -> TuneResult:
    """Search ``cfg.tune.space`` with Ray Tune (ASHA) for the estimator of ``cfg``.

    Arguments:
        samples: training samples as written by ``SimulateSamples`` (``{split}_{proc}_x (n, D)``,
            ``{split}_{proc}_z (n,)``, ``{split}_reference_x``, ``{split}_reference_z``).
        processes: the model's processes, in training order.
        cfg: the analysis; ``cfg.tune`` holds the search, ``cfg.estimator`` and
            ``cfg.training`` the values not searched.
        ray_address: a running Ray cluster (``host:port`` of its head, or ``auto``); ``None``
            starts a local Ray with ``tune.max_concurrent * tune.cpus_per_trial`` CPUs.
        progress: receives one line per finished trial.

    Raises :class:`ConfigError` for an unreachable ``ray_address`` or a closure objective
    without ratio estimators, :class:`~hsbi.exceptions.DataError` for missing samples, and
    :class:`FitError` when no trial finished.
    """
    tcfg = cfg.tune
    if tcfg.objective != "loss" and cfg.estimator.kind != "lre":
        raise ConfigError(f"config key 'tune.objective' = {tcfg.objective!r}: closure needs ratio "
                          f"estimators (estimator.kind: lre); use 'loss' for estimator.kind {cfg.estimator.kind!r}")
    data = _trial_samples(samples, processes, cfg.estimator.kind, tcfg.samples)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no progress tables (verbose=0 is honoured)
    with _ray(ray_address, tcfg.max_concurrent * tcfg.cpus_per_trial), \
            tempfile.TemporaryDirectory(prefix="hsbi-tune-") as storage:
        grid = _fit(cfg, data, processes, storage, progress)
        return _summarise(grid, OBJECTIVES[tcfg.objective], len(processes) * tcfg.max_epochs)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV with the union of their keys as columns (lists written as JSON)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows)


def plot_tune(path: Path, result: TuneResult) -> None:
    """The objective of every trial against its iteration (epochs over the member's
    classifiers); the best trial highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for trial in result.trials:
        rows = [h for h in result.history if h["trial"] == trial["trial"] and result.objective in h]
        best = trial["trial"] == result.metrics["trial"]
        ax.plot([h["iteration"] for h in rows], [h[result.objective] for h in rows], marker="o", ms=3,
                lw=2.2 if best else 1.0, color="tab:red" if best else None, alpha=1.0 if best else 0.6,
                label=f"trial {trial['trial']}: {trial['status']}" + (" (best)" if best else ""))
    ax.set_xlabel("iteration (epochs over the member's classifiers)")
    ax.set_ylabel(result.objective)
    ax.set_yscale("log")
    ax.set_title(f"ASHA search: {len(result.trials)} trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_tune_result(directory: Path, result: TuneResult) -> None:
    """Write ``best.json`` (objective, the best values by dotted key under ``overrides``, their
    metrics), ``trials.csv`` (one row per trial), ``history.csv`` (per trial and iteration) and
    ``tune.png`` (:func:`plot_tune`)."""
    best = {"objective": result.objective, "overrides": result.best, "metrics": result.metrics}
    (directory / "best.json").write_text(json.dumps(best, indent=1) + "\n")
    _write_csv(directory / "trials.csv", result.trials)
    _write_csv(directory / "history.csv", result.history)
    plot_tune(directory / "tune.png", result)
