"""Hyper-parameter search: TuneHyperparameters (Ray Tune with ASHA, scored on closure)."""

from __future__ import annotations

from typing import Any

import luigi

from workflows.framework import HSBITask
from workflows.tasks import SimulateSamples

__all__ = ["TuneHyperparameters"]


class TuneHyperparameters(HSBITask):
    """Ray Tune (ASHA) over ``tune.space``: each trial trains one member on the training samples
    and reports per epoch the validation loss and the closure metrics; minimises
    ``tune.objective`` (default closure). Writes best.json (the best values by dotted config
    key under ``overrides``, and their metrics), trials.csv, history.csv and tune.png. A local
    Ray by default; ``--ray-address host:port`` joins a running cluster."""

    config_sections = ("model", "simulation", "estimator", "training", "tune")
    code_modules = ("hsbi.training", "hsbi.diagnostics", "hsbi.estimators", "hsbi.config.tune")
    # set by the search (hsbi.config.tune.FIXED_KEYS), or not its business (member count, tune.apply)
    ignored_keys = ("training.members", "training.seed", "training.max_epochs", "training.devices",
                    "training.nodes", "training.strategy", "training.logger", "tune.apply")
    # each trial is reproducible on one machine; with tune.max_concurrent > 1 ASHA's stops may not be
    reproducibility = {"rtol": 1e-4, "atol": 1e-5}

    ray_address = luigi.OptionalParameter(
        default=None, significant=False,
        description="address (host:port) of a running Ray cluster to run the trials on, e.g. "
        "from `ray start --head`; default: a local Ray",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from hsbi.config.tune import check_ray_address

        self.run_hsbi(check_ray_address, self.ray_address)  # before anything is run or written

    def requires(self) -> dict:
        return {"samples": SimulateSamples.req(self)}

    def run(self) -> None:
        from hsbi.training.tune import save_tune_result, tune_hyperparameters

        cfg = self.analysis
        samples = self.requires()["samples"].artifact().arrays("samples.npz")
        result = self.run_hsbi(
            tune_hyperparameters, samples, cfg.model.build().processes, cfg,
            ray_address=self.ray_address, progress=self.publish_message,
        )
        with self.write() as out:
            save_tune_result(out, result)
        self.publish_message(f"best: {self.output().path}/best.json {result.best} {result.metrics}")
