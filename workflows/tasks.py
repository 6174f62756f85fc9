"""The hsbi DAG: SimulateSamples -> TrainEstimator -> NeymanToys -> ConfidenceBelt -> InferProfileLikelihood."""

from __future__ import annotations

import json
import shutil

import numpy as np

from workflows.framework import HSBITask, HSBIWorkflow
from workflows.ingest import IngestSamples

__all__ = [
    "ConfidenceBelt",
    "CoverageStudy",
    "Ensemble",
    "InferProfileLikelihood",
    "NeymanToys",
    "SimulateObserved",
    "SimulateSamples",
    "TrainEstimator",
]


def _member_paths(train: TrainEstimator) -> list:
    """The members' artifact directories in branch order (the member order of combination.json)."""
    return [b.artifact().path for b in train.get_branch_tasks().values()]


def _densities(cfg, inputs: dict, model) -> dict:  # -> {kind: ensemble, "exact": model}
    """The trained ensemble under its kind (combined as the Ensemble step fitted it, for ratio
    estimators), and the exact likelihood for comparison."""
    from hsbi.estimators import load_combined, load_ensemble

    paths = _member_paths(inputs["estimator"])
    if "ensemble" in inputs:
        ensemble = load_combined(paths, inputs["ensemble"].artifact().path / "combination.json")
    else:
        ensemble = load_ensemble(paths)
    return {cfg.estimator.kind: ensemble, **({"exact": model} if model.exact else {})}


def _event_inputs(task: HSBITask) -> dict:
    """The ingested samples, for a data-driven model (``model.needs_events``: e.g. higgs_tes)."""
    from hsbi.models import MODELS

    return {"events": IngestSamples.req(task, branch=-1)} if MODELS[task.analysis.model.name].needs_events else {}


def _model(task: HSBITask, split: str):  # -> MixtureModel
    """The config's model; a data-driven one holding the ingested events, sampling ``split``."""
    from hsbi.data import attach_events

    model = task.analysis.model.build()
    if not model.needs_events:
        return model
    dirs = [b.artifact().path for b in IngestSamples.req(task, branch=-1).get_branch_tasks().values()]
    return task.run_hsbi(attach_events, model, dirs, split)


def _load_observed(task: SimulateObserved):  # -> Dataset
    from hsbi.data import Dataset

    arrays = task.artifact().arrays("observed.npz")
    return Dataset(x=arrays["x"], aux=float(arrays["aux"]))


def _estimator_inputs(task: HSBITask) -> dict:
    """The trained members and, for ratio estimators, the Ensemble step that combines them."""
    inputs = {"estimator": TrainEstimator.req(task, branch=-1)}
    if task.analysis.estimator.kind == "lre":
        inputs["ensemble"] = Ensemble.req(task)
    return inputs


def _inference_inputs(task: HSBITask) -> dict:
    """What every inference task requires: the trained ensemble and the observed dataset."""
    return {**_estimator_inputs(task), "observed": SimulateObserved.req(task), **_event_inputs(task)}


#: the last analysis loaded by _fitted, by the addresses of its estimator members and observed data
_FITTED: dict[tuple, tuple] = {}


def _fitted(task: HSBITask) -> tuple:  # -> (model, densities, observed Dataset, {name: ObservedFit})
    """The model, densities, observed dataset and observed fits of ``task``'s analysis, loaded
    and fitted once per process: a run's NeymanToys branches, ConfidenceBelt and
    InferProfileLikelihood share them (the key is the inputs' content addresses)."""
    from hsbi.inference.analysis import observed_fits

    inputs = _inference_inputs(task)
    def address(name: str, req: HSBITask) -> str:
        return str([b.address for b in req.get_branch_tasks().values()] if name == "estimator" else req.address)

    key = (repr(task.analysis.inference), *(address(name, req) for name, req in sorted(inputs.items())))
    if key not in _FITTED:
        cfg = task.analysis
        model = _model(task, "test")
        densities, observed = _densities(cfg, inputs, model), _load_observed(inputs["observed"])
        _FITTED.clear()
        _FITTED[key] = (model, densities, observed, task.run_hsbi(observed_fits, cfg, densities, model, observed))
    return _FITTED[key]


class SimulateSamples(HSBITask):
    """Training samples: numerator events per process and the reference sample (eq. 5)."""

    config_sections = ("model", "simulation")
    code_modules = ("hsbi.models", "hsbi.data.simulation", "hsbi.data.events")

    def requires(self) -> dict:
        return _event_inputs(self)

    def run(self) -> None:
        from hsbi.data import simulate_training_samples

        samples = self.run_hsbi(simulate_training_samples, _model(self, "train"), self.analysis)
        with self.write() as out:
            np.savez(out / "samples.npz", **samples)


class SimulateObserved(HSBITask):
    """The observed dataset at the configured truth, with its auxiliary measurement."""

    config_sections = ("model", "inference")
    code_modules = ("hsbi.models", "hsbi.data.simulation", "hsbi.data.events")
    ignored_keys = ("inference.levels", "inference.scan_points", "inference.neyman", "inference.coverage")

    def requires(self) -> dict:
        return _event_inputs(self)

    def run(self) -> None:
        from hsbi.data import simulate_observed

        data = self.run_hsbi(simulate_observed, _model(self, "test"), self.analysis)
        with self.write() as out:
            np.savez(out / "observed.npz", x=data.x, aux=np.array(data.aux))


class TrainEstimator(HSBIWorkflow):
    """One branch per ensemble member (seed ``training.seed + member``) and fold of the train
    split (``training.folds``; 1: the whole train split, validated on the val split), trained
    with Lightning: per-process ratio classifiers (``estimator.kind: lre``) or conditional
    flows (``dle``)."""

    config_sections = ("model", "estimator", "training")
    code_modules = ("hsbi.estimators.io", "hsbi.estimators.lre", "hsbi.estimators.dle", "hsbi.training.data",
                    "hsbi.training.fit", "hsbi.training.lre", "hsbi.training.dle", "hsbi.data.simulation")
    # a member's seed is its branch data; the combination is the Ensemble step's
    ignored_keys = ("training.members", "training.folds", "training.seed", "estimator.combine",
                    "estimator.calibration", "estimator.normalise")
    # bitwise on one machine and thread count; elsewhere floating-point order may differ
    reproducibility = {"rtol": 1e-4, "atol": 1e-5}

    def create_branch_map(self) -> dict[int, dict[str, int]]:
        cfg = self.analysis.training
        pairs = [(m, f) for m in range(cfg.members) for f in range(cfg.folds)]
        return {i: {"member": m, "seed": cfg.seed + m, "fold": f, "folds": cfg.folds}
                for i, (m, f) in enumerate(pairs)}

    def _inputs(self) -> dict:
        inputs = {"samples": SimulateSamples.req(self)}
        if self.analysis.tune.apply:  # the search's best values; its address enters the members'
            from workflows.tune import TuneHyperparameters

            inputs["tune"] = TuneHyperparameters.req(self)
        return inputs

    def workflow_requires(self) -> dict:
        return {**super().workflow_requires(), **self._inputs()}

    def requires(self) -> dict:
        return self._inputs()

    def run(self) -> None:
        from hsbi.config.tune import apply_tuned
        from hsbi.data import fold_samples
        from hsbi.estimators import save_dle_member, save_member
        from hsbi.estimators.io import export_onnx
        from hsbi.training import TRAINERS

        cfg, reqs = self.analysis, self.requires()
        if "tune" in reqs:
            cfg = self.run_hsbi(apply_tuned, cfg, reqs["tune"].artifact().json("best.json")["overrides"])
        samples = reqs["samples"].artifact().arrays("samples.npz")
        fold, folds = self.branch_data["fold"], self.branch_data["folds"]
        if folds > 1:
            samples = self.run_hsbi(fold_samples, samples, fold, folds)
        save = save_dle_member if cfg.estimator.kind == "dle" else save_member
        with self.write() as out:  # training logs (training.logger) go into the artifact
            nets, history = self.run_hsbi(
                TRAINERS[cfg.estimator.kind], samples, cfg.model.build().processes, cfg.estimator, cfg.training,
                seed=self.branch_data["seed"], label=f"TrainEstimator member {self.branch_data['member']}" + (f" fold {fold}" if folds > 1 else ""), log_dir=out / "logs",
            )
            save(out, nets)
            if cfg.estimator.onnx:
                self.run_hsbi(export_onnx, nets, out / "onnx")
            (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")


class Ensemble(HSBITask):
    """Fits how the TrainEstimator members are combined (``estimator.combine``: mean, median,
    weighted) and calibrated (``estimator.calibration``: none, temperature, isotonic) on half of
    the validation split and measures it on the other half; writes combination.json (loadable
    with ``hsbi.estimators.load_combined``), ensemble.json (parameters, member spread, closure
    chi2 per feature for the ensemble and each member, ECE, BCE), closure.png and calibration.png."""

    config_sections = ("model", "estimator")
    code_modules = ("hsbi.diagnostics", "hsbi.estimators", "hsbi.training.ensemble")
    ignored_keys = ("estimator.onnx",)

    def requires(self) -> dict:
        return {"estimator": TrainEstimator.req(self, branch=-1), "samples": SimulateSamples.req(self)}

    def run(self) -> None:
        from hsbi.estimators import save_combination
        from hsbi.training.ensemble import combine_ensemble

        est, reqs = self.analysis.estimator, self.requires()
        samples = reqs["samples"].artifact().arrays("samples.npz")
        options = {"method": est.combine, "calibration": est.calibration, "normalise": est.normalise}
        with self.write() as out:
            combined, report = self.run_hsbi(combine_ensemble, _member_paths(reqs["estimator"]), samples,
                                             **options, plot_dir=out)
            save_combination(out / "combination.json", combined.combination)
            (out / "ensemble.json").write_text(json.dumps(report, indent=1) + "\n")
        self.publish_message(f"ensemble: {self.output().path}/ensemble.json")


class NeymanToys(HSBIWorkflow):
    """One branch per (tested mu, toy chunk): ``inference.neyman.chunk`` toys at the observed
    conditional MLE of the nuisance, seeded by (seed, mu, chunk index); their t_mu per density
    (toys.npz), seeds and failed fits (toys.json) and the toy datasets (datasets.npz)."""

    config_sections = ("inference",)
    code_modules = ("hsbi.inference", "hsbi.models", "hsbi.estimators")
    ignored_keys = ("inference.levels", "inference.scan_points", "inference.neyman", "inference.truth",
                    "inference.observed_seed", "inference.coverage")  # truth: via SimulateObserved
    version = 2  # v2: (point, chunk) branches, datasets.npz

    def create_branch_map(self) -> dict[int, dict]:
        neyman = self.analysis.inference.neyman
        branches = [
            {"mu": mu, "chunk": k, "toys": n, "seed": neyman.seed, "method": neyman.method}
            for mu in neyman.grid for k, n in enumerate(neyman.chunks)
        ]
        return dict(enumerate(branches))

    def requires(self) -> dict:
        return _inference_inputs(self)

    def workflow_requires(self) -> dict:
        return {**super().workflow_requires(), **_inference_inputs(self)}

    def run(self) -> None:
        from hsbi.inference.analysis import neyman_toys, toy_files

        model, densities, _, fits = _fitted(self)
        mu, chunk, n = (self.branch_data[k] for k in ("mu", "chunk", "toys"))
        toys = self.run_hsbi(neyman_toys, self.analysis, densities, model, fits, mu, chunk, n,
                             progress=self.publish_message)
        t, datasets, meta = toy_files(toys, mu, chunk, self.branch_data["method"])
        with self.write() as out:
            np.savez(out / "toys.npz", **t)
            np.savez_compressed(out / "datasets.npz", **datasets)
            (out / "toys.json").write_text(json.dumps(meta, indent=1) + "\n")


class ConfidenceBelt(HSBITask):
    """Critical values of t_mu per grid point, level and density from all NeymanToys branches,
    with order-statistic bands, toys used and failed fits (belt.json); belt.png draws them with
    the chi2 quantiles and the observed t_mu."""

    config_sections = ("inference",)
    code_modules = ("hsbi.inference", "hsbi.plotting", "hsbi.models", "hsbi.estimators")
    ignored_keys = ("inference.scan_points", "inference.truth", "inference.observed_seed", "inference.coverage")

    def requires(self) -> dict:
        from workflows.statmodel import DeclaredBelt, check_declared

        if check_declared(self):  # the declared model's belt (DeclaredNeymanToys, batched many-NP fits)
            return {"declared": DeclaredBelt.req(self)}
        return {"toys": NeymanToys.req(self, branch=-1), **_inference_inputs(self)}

    def run(self) -> None:
        from hsbi.inference.analysis import confidence_belt
        from hsbi.plotting.inference import plot_belt

        if "declared" in self.requires():
            _copy_results(self, self.requires()["declared"])
            self.publish_message(f"belt: {self.output().path}/belt.json")
            return
        arts = [b.artifact() for b in self.requires()["toys"].get_branch_tasks().values()]
        belt = self.run_hsbi(confidence_belt, self.analysis, [(a.arrays("toys.npz"), a.json("toys.json")) for a in arts])
        model, _, _, fits = _fitted(self)
        mu = np.linspace(belt["grid"][0], belt["grid"][-1], 101)
        with self.write() as out:
            (out / "belt.json").write_text(json.dumps(belt, indent=1) + "\n")
            plot_belt(out / "belt.png", belt, {name: (mu, fit.scan(mu)) for name, fit in fits.items()},
                      poi_label=model.poi_label)
        self.publish_message(f"belt: {self.output().path}/belt.json")


def _copy_results(task: HSBITask, source: HSBITask) -> None:
    """Write the JSON and PNG files of ``source``'s artifact as ``task``'s (a dispatching task)."""
    with task.write() as out:
        for path in source.artifact().path.iterdir():
            if path.suffix in (".json", ".png") and path.name != "manifest.json":
                shutil.copyfile(path, out / path.name)


class InferProfileLikelihood(HSBITask):
    """Observed profile likelihood in mu (nuisance profiled): Wilks intervals and Neyman intervals
    by inverting the ConfidenceBelt, for the trained estimator and for the exact likelihood;
    writes result.json and profile.png. With ``estimator.kind: set`` the dataset-level set
    likelihood of the ``sets`` section (``sets.estimator: ratio``) is used: the result is that
    of InferSetProfile, whose Neyman toys are the SetNeymanToys workflow."""

    config_sections = ("inference",)
    code_modules = ("hsbi.inference", "hsbi.plotting", "hsbi.models", "hsbi.estimators")
    version = 2  # v2: Neyman intervals from ConfidenceBelt; per-point toys and failed fits in details

    def requires(self) -> dict:
        from workflows.statmodel import FitDeclaredModel, check_declared

        if check_declared(self):  # the statmodel section: the user's own analysis
            return {"declared": FitDeclaredModel.req(self)}
        if self.analysis.estimator.kind == "set":  # the set-level likelihood of the sets section
            from workflows.sets import InferSetProfile

            return {"set_profile": InferSetProfile.req(self)}
        return {"belt": ConfidenceBelt.req(self), **_inference_inputs(self)}

    def run(self) -> None:
        from hsbi.inference.analysis import infer
        from hsbi.plotting import plot_profile_and_belt

        reqs = self.requires()
        if "declared" in reqs or "set_profile" in reqs:  # the result of the declared model's fit or InferSetProfile
            _copy_results(self, next(iter(reqs.values())))
            self.publish_message(f"result: {self.output().path}/result.json")
            return
        cfg = self.analysis
        model, densities, observed, fits = _fitted(self)
        belt = self.requires()["belt"].artifact().json("belt.json")
        result = self.run_hsbi(infer, cfg, densities, model, observed, belt, fits)
        with self.write() as out:
            (out / "result.json").write_text(json.dumps(result.summary, indent=1) + "\n")
            plot_profile_and_belt(
                out / "profile.png", result.scan_mu, result.scans, result.grid, result.critical,
                truth=cfg.inference.truth.mu, poi_label=model.poi_label,
                title=f"{cfg.name}: {len(densities[cfg.estimator.kind].members)}-member {cfg.estimator.kind} ensemble"
                + (" vs exact" if "exact" in densities else ""),
            )
        self.publish_message(f"result: {self.output().path}/result.json")


class CoverageStudy(HSBITask):
    """Datasets thrown at the configured truth: coverage of Wilks and Neyman intervals (68.3%,
    95%) with binomial errors and mean widths, for the trained estimator and the exact
    likelihood; writes coverage.json and coverage.png. For a declared model: DeclaredCoverage's
    (toys of the model at ``statmodel.truth``)."""

    config_sections = ("inference",)
    code_modules = ("hsbi.inference", "hsbi.plotting", "hsbi.models", "hsbi.estimators")
    ignored_keys = ("inference.neyman", "inference.scan_points", "inference.observed_seed")

    def requires(self) -> dict:
        from workflows.statmodel import DeclaredCoverage, check_declared

        if check_declared(self):  # the declared model: toys of the model at statmodel.truth
            return {"declared": DeclaredCoverage.req(self)}
        return {**_estimator_inputs(self), **_event_inputs(self)}

    def run(self) -> None:
        from hsbi.inference.coverage import coverage_study
        from hsbi.plotting import plot_test_statistic

        if "declared" in self.requires():
            _copy_results(self, self.requires()["declared"])
            self.publish_message(f"coverage: {self.output().path}/coverage.json")
            return
        cfg = self.analysis
        model = _model(self, "test")
        densities = _densities(cfg, self.requires(), model)
        summary, t_values = self.run_hsbi(coverage_study, cfg, densities, model, progress=self.publish_message)
        with self.write() as out:
            (out / "coverage.json").write_text(json.dumps(summary, indent=1) + "\n")
            plot_test_statistic(out / "coverage.png", t_values, {k: summary[k] for k in densities})
        self.publish_message(f"coverage: {self.output().path}/coverage.json")
