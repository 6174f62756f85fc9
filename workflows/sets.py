"""Set estimators over event ensembles (the ``sets`` config section): SimulateSets ->
TrainSetEstimator -> InferPosterior (npe) or SetNeymanToys -> InferSetProfile (ratio)."""

from __future__ import annotations

import json

import numpy as np

from workflows.framework import HSBITask, HSBIWorkflow, UserError

__all__ = ["InferPosterior", "InferSetProfile", "SetNeymanToys", "SimulateSets", "TrainSetEstimator"]

#: ``sets`` keys that only inference uses (left out of simulation and training addresses)
_INFERENCE_KEYS = tuple(f"sets.{k}" for k in (
    "truth", "observed_seed", "observed_size", "levels", "stream_steps", "sbc_sets", "sbc_samples",
    "scan_points", "neyman"))
_ESTIMATOR_KEYS = tuple(f"sets.{k}" for k in (
    "encoder", "widths", "latent", "summary", "transforms", "heads", "blocks", "training"))
_SET_CODE = ("hsbi.models.bump_hunt", "hsbi.models.on_off", "hsbi.estimators.sets",
             "hsbi.estimators.npe", "hsbi.estimators.set_ratio")


def _observed(task: HSBITask):  # -> np.ndarray, the observed set of the config
    from hsbi.inference.sets import observed_set

    s = task.analysis.sets
    return observed_set(s.build(), s.truth, s.observed_seed, s.observed_size)


def _estimator(task: HSBITask):  # -> SetNPE | SetRatioNet
    from hsbi.estimators.npe import load_npe
    from hsbi.estimators.set_ratio import load_set_ratio

    path = TrainSetEstimator.req(task).artifact().path
    return load_set_ratio(path) if task.analysis.sets.estimator == "ratio" else load_npe(path)


class _NeedsKind:
    """Mixin: the task needs ``sets.estimator == needs``; checked when the task is created, so
    a mismatch ends ``law run`` with one line before anything is scheduled."""

    needs = ""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        from hsbi.config.sets import check_estimator_kind
        from hsbi.exceptions import ConfigError

        try:
            check_estimator_kind(self.analysis.sets, self.needs, self.task_family)
        except ConfigError as err:
            raise UserError(f"{self.task_family}: {err}") from None


class SimulateSets(HSBIWorkflow):
    """One branch per chunk of ``sets.chunk`` simulated sets of the train or val split
    (``sets.n_train``, ``sets.n_val``), seeded by (``sets.seed``, split, chunk): sets.npz."""

    config_sections = ("sets",)
    code_modules = (*_SET_CODE[:2], "hsbi.training.sets")
    ignored_keys = (*_INFERENCE_KEYS, *_ESTIMATOR_KEYS)

    def create_branch_map(self) -> dict[int, dict]:
        s = self.analysis.sets
        rows = [{"split": split, "index": k, "sets": min(s.chunk, total - k * s.chunk)}
                for split, total in (("train", s.n_train), ("val", s.n_val))
                for k in range(-(-total // s.chunk))]
        return dict(enumerate(rows))

    def run(self) -> None:
        from hsbi.training.sets import simulate_chunk

        s, b = self.analysis.sets, self.branch_data
        arrays = self.run_hsbi(simulate_chunk, s.build(), s, b["split"], b["index"], b["sets"])
        with self.write() as out:
            np.savez(out / "sets.npz", **arrays)


class TrainSetEstimator(HSBITask):
    """The set estimator ``sets.estimator`` (npe: posterior of the POI; ratio: set-level
    likelihood) trained with Lightning on all SimulateSets chunks: weights.safetensors,
    estimator.json, history.json."""

    config_sections = ("sets",)
    code_modules = (*_SET_CODE, "hsbi.training.fit", "hsbi.training.data", "hsbi.training.sets")
    ignored_keys = _INFERENCE_KEYS
    reproducibility = {"rtol": 1e-4, "atol": 1e-5}

    def requires(self) -> SimulateSets:
        return SimulateSets.req(self, branch=-1)

    def run(self) -> None:
        from hsbi.estimators.npe import save_npe
        from hsbi.estimators.set_ratio import save_set_ratio
        from hsbi.training.sets import merge_chunks, train_set_estimator

        s = self.analysis.sets
        branches = self.requires().get_branch_tasks().values()
        arrays = [(b.branch_data["split"], b.artifact().arrays("sets.npz")) for b in branches]
        splits = {split: merge_chunks([a for k, a in arrays if k == split]) for split in ("train", "val")}
        with self.write() as out:
            net, history = self.run_hsbi(train_set_estimator, splits["train"], splits["val"], s.build(),
                                         s, log=self.publish_message, log_dir=out / "logs")
            (save_set_ratio if s.estimator == "ratio" else save_npe)(out, net)
            (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")


class InferPosterior(_NeedsKind, HSBITask):
    """The set posterior of the observed set next to the exact hierarchical posterior and the
    per-event product (where the model has them), its streaming update in ``sets.stream_steps``
    steps against all events at once, and SBC over ``sets.sbc_sets`` sets: posterior.json,
    posterior.png, streaming.png, sbc.png."""

    needs = "npe"
    config_sections = ("sets",)
    code_modules = (*_SET_CODE, "hsbi.inference.posterior", "hsbi.plotting.sets")
    ignored_keys = ("sets.neyman", "sets.scan_points")

    def requires(self) -> TrainSetEstimator:
        return TrainSetEstimator.req(self)

    def run(self) -> None:
        from hsbi.inference.posterior import infer_posterior
        from hsbi.plotting.sets import plot_posterior_report

        s = self.analysis.sets
        result, arrays = self.run_hsbi(infer_posterior, _estimator(self), s.build(), s, _observed(self))
        with self.write() as out:
            (out / "posterior.json").write_text(json.dumps(result, indent=1) + "\n")
            np.savez(out / "posterior.npz", **arrays)
            plot_posterior_report(out, result, arrays)
        self.publish_message(f"posterior: {self.output().path}/posterior.json")


def _likelihoods(task: HSBITask) -> dict:
    """The trained set likelihood and, where the model has one, the exact likelihood."""
    model = task.analysis.sets.build()
    out = {"set": _estimator(task)}
    if getattr(model, "exact_likelihood", False):
        out["exact"] = model
    return out


class SetNeymanToys(_NeedsKind, HSBIWorkflow):
    """One branch per (POI grid point of ``sets.neyman``, chunk of toys): toys at the observed
    conditional MLE of the nuisance per likelihood, their t (toys.npz) and failed fits."""

    needs = "ratio"
    config_sections = ("sets",)
    code_modules = (*_SET_CODE, "hsbi.inference.sets")
    ignored_keys = ("sets.levels", "sets.stream_steps", "sets.sbc_sets", "sets.sbc_samples")

    def create_branch_map(self) -> dict[int, dict]:
        ney = self.analysis.sets.neyman
        rows = [{"mu": mu, "chunk": k, "toys": n, "seed": ney.seed}
                for mu in ney.grid for k, n in enumerate(ney.chunks)]
        return dict(enumerate(rows))

    def requires(self) -> TrainSetEstimator:
        return TrainSetEstimator.req(self)

    def workflow_requires(self) -> dict:
        return {**super().workflow_requires(), "estimator": TrainSetEstimator.req(self)}

    def run(self) -> None:
        from hsbi.inference.sets import fit_grids, neyman_set_toys, profile_set, toy_seed

        s, b = self.analysis.sets, self.branch_data
        model, liks, observed = s.build(), _likelihoods(self), _observed(self)
        grids = fit_grids(model, s.scan_points)
        profiles = {n: self.run_hsbi(profile_set, lik, observed, *grids) for n, lik in liks.items()}
        toys = self.run_hsbi(neyman_set_toys, liks, model, profiles, b["mu"], b["toys"],
                             toy_seed(b["seed"], b["mu"], b["chunk"]))
        with self.write() as out:
            np.savez(out / "toys.npz", **{n: v["t"] for n, v in toys.items()})
            meta = {n: {"failed": v["failed"], "nuisance": v["nuisance"]} for n, v in toys.items()}
            (out / "toys.json").write_text(json.dumps({"mu": b["mu"], **meta}, indent=1) + "\n")


class InferSetProfile(_NeedsKind, HSBITask):
    """The set-level profile likelihood of the observed set: Wilks intervals and Neyman
    intervals from the SetNeymanToys belt, for the trained set likelihood and the exact one:
    result.json, profile.png."""

    needs = "ratio"
    config_sections = ("sets",)
    code_modules = (*_SET_CODE, "hsbi.inference.sets", "hsbi.plotting.sets")
    ignored_keys = ("sets.stream_steps", "sets.sbc_sets", "sets.sbc_samples")

    def requires(self) -> dict:
        return {"estimator": TrainSetEstimator.req(self), "toys": SetNeymanToys.req(self, branch=-1)}

    def run(self) -> None:
        from hsbi.inference.sets import infer_set_profile
        from hsbi.plotting.sets import plot_set_profiles

        s, model = self.analysis.sets, self.analysis.sets.build()
        arts = [b.artifact() for b in self.requires()["toys"].get_branch_tasks().values()]
        toys = [(a.json("toys.json")["mu"], a.arrays("toys.npz")) for a in arts]
        result = self.run_hsbi(infer_set_profile, _likelihoods(self), model, _observed(self),
                               s.scan_points, s.levels, toys)
        with self.write() as out:
            (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
            scans = {n: (np.array(v["poi"]), np.array(v["t"])) for n, v in result["scans"].items()}
            plot_set_profiles(out / "profile.png", scans, s.truth[0], s.levels, model.poi_name,
                              f"{self.analysis.name}: set-level profile likelihood")
        self.publish_message(f"result: {self.output().path}/result.json")
