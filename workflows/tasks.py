"""The hsbi DAG: SimulateSamples -> TrainEstimator -> NeymanToys -> InferProfileLikelihood."""

from __future__ import annotations

import json

import numpy as np

from workflows.framework import HSBITask, HSBIWorkflow, UserError as UserError_

__all__ = [
    "CoverageStudy",
    "DiagnoseEnsemble",
    "InferProfileLikelihood",
    "NeymanToys",
    "SimulateObserved",
    "SimulateSamples",
    "TrainEstimator",
]


def _load_ensemble(train: TrainEstimator):  # -> LREEnsemble | DLEEnsemble
    from hsbi.estimators import load_ensemble

    branches = train.get_branch_tasks().values()
    return load_ensemble([b.artifact().path for b in branches])


def _densities(cfg, train: TrainEstimator, model) -> dict:  # -> {kind: ensemble, "exact": model}
    """The trained ensemble under its kind, and the exact likelihood for comparison."""
    return {cfg.estimator.kind: _load_ensemble(train), "exact": model}


def _load_observed(task: SimulateObserved):  # -> Dataset
    from hsbi.data import Dataset

    arrays = task.artifact().arrays("observed.npz")
    return Dataset(x=arrays["x"], aux=float(arrays["aux"]))


class SimulateSamples(HSBITask):
    """Training samples: numerator events per process and the reference sample (eq. 5)."""

    config_sections = ("model", "simulation")
    code_modules = ("hsbi.models", "hsbi.data.simulation")

    def run(self) -> None:
        from hsbi.data import simulate_training_samples

        samples = self.run_hsbi(simulate_training_samples, self.analysis.model.build(), self.analysis)
        with self.write() as out:
            np.savez(out / "samples.npz", **samples)


class SimulateObserved(HSBITask):
    """The observed dataset at the configured truth, with its auxiliary measurement."""

    config_sections = ("model", "inference")
    code_modules = ("hsbi.models", "hsbi.data.simulation")
    ignored_keys = ("inference.levels", "inference.scan_points", "inference.neyman")

    def run(self) -> None:
        from hsbi.data import simulate_observed

        data = self.run_hsbi(simulate_observed, self.analysis.model.build(), self.analysis)
        with self.write() as out:
            np.savez(out / "observed.npz", x=data.x, aux=np.array(data.aux))


class TrainEstimator(HSBIWorkflow):
    """One branch per ensemble member (seed ``training.seed + member``), trained with Lightning:
    per-process ratio classifiers (``estimator.kind: lre``) or conditional flows (``dle``)."""

    config_sections = ("model", "estimator", "training")
    code_modules = ("hsbi.estimators", "hsbi.training", "hsbi.data.simulation")
    ignored_keys = ("training.members", "training.seed")  # a member's seed is its branch data
    # bitwise on one machine and thread count; elsewhere floating-point order may differ
    reproducibility = {"rtol": 1e-4, "atol": 1e-5}

    def create_branch_map(self) -> dict[int, dict[str, int]]:
        cfg = self.analysis.training
        return {i: {"member": i, "seed": cfg.seed + i} for i in range(cfg.members)}

    def workflow_requires(self) -> dict:
        return {**super().workflow_requires(), "samples": SimulateSamples.req(self)}

    def requires(self) -> dict:
        return {"samples": SimulateSamples.req(self)}

    def run(self) -> None:
        from hsbi.estimators import save_dle_member, save_member
        from hsbi.training import TRAINERS

        cfg = self.analysis
        samples = self.requires()["samples"].artifact().arrays("samples.npz")
        save = save_dle_member if cfg.estimator.kind == "dle" else save_member
        nets, history = self.run_hsbi(
            TRAINERS[cfg.estimator.kind], samples, cfg.model.build().processes, cfg.estimator, cfg.training,
            seed=self.branch_data["seed"], label=f"TrainEstimator member {self.branch}",
        )
        with self.write() as out:
            save(out, nets)
            (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")


class DiagnoseEnsemble(HSBITask):
    """Closure of the LRE ensemble and of each member on the validation split: chi2 per
    feature and process of the numerator against the reference reweighted by r(x, z);
    writes closure.json and closure.png."""

    config_sections = ("model", "estimator")
    code_modules = ("hsbi.diagnostics", "hsbi.estimators")

    def requires(self) -> dict:
        return {"estimator": TrainEstimator.req(self, branch=-1), "samples": SimulateSamples.req(self)}

    def run(self) -> None:
        from hsbi.diagnostics import closure_chi2, plot_closure

        if self.analysis.estimator.kind != "lre":
            raise UserError_("DiagnoseEnsemble: closure needs ratio estimators (estimator.kind: lre)")
        ens = _load_ensemble(self.requires()["estimator"])
        s = self.requires()["samples"].artifact().arrays("samples.npz")
        x_ref, z_ref = s["val_reference_x"], s["val_reference_z"]
        member = ens.member_log_ratios(x_ref, z_ref)  # (M, n, C)
        weights = {"ensemble": np.exp(member.mean(0))} | {f"member {m}": np.exp(r) for m, r in enumerate(member)}
        result = {
            name: {p: closure_chi2(s[f"val_{p}_x"], x_ref, w[:, c]) for c, p in enumerate(ens.processes)}
            for name, w in weights.items()
        }
        with self.write() as out:
            (out / "closure.json").write_text(json.dumps(result, indent=1) + "\n")
            plot_closure(out / "closure.png", {p: s[f"val_{p}_x"] for p in ens.processes}, x_ref,
                         {p: weights["ensemble"][:, c] for c, p in enumerate(ens.processes)},
                         [f"x{i + 1}" for i in range(x_ref.shape[1])], result)
        self.publish_message(f"closure: {self.output().path}/closure.json")


class NeymanToys(HSBIWorkflow):
    """One branch per tested mu: toys at the observed conditional MLE, their t_mu (LRE, exact)."""

    config_sections = ("inference",)
    code_modules = ("hsbi.inference", "hsbi.models", "hsbi.estimators")
    ignored_keys = ("inference.levels", "inference.scan_points", "inference.neyman", "inference.truth",
                    "inference.observed_seed")  # truth enters through SimulateObserved's address

    def create_branch_map(self) -> dict[int, dict[str, float]]:
        neyman = self.analysis.inference.neyman
        return {i: {"mu": mu, "toys": neyman.toys, "seed": neyman.seed} for i, mu in enumerate(neyman.grid)}

    def _inputs(self) -> dict:
        return {"estimator": TrainEstimator.req(self, branch=-1), "observed": SimulateObserved.req(self)}

    def requires(self) -> dict:
        return self._inputs()

    def workflow_requires(self) -> dict:
        return {**super().workflow_requires(), **self._inputs()}

    def run(self) -> None:
        from hsbi.inference.analysis import neyman_toys

        cfg, reqs = self.analysis, self.requires()
        model = cfg.model.build()
        densities = _densities(cfg, reqs["estimator"], model)
        toys = self.run_hsbi(
            neyman_toys, cfg, densities, model, _load_observed(reqs["observed"]),
            self.branch_data["mu"], progress=self.publish_message,
        )
        with self.write() as out:
            np.savez(out / "toys.npz", **{f"t_{name}": v["t"] for name, v in toys.items()})
            meta = {name: {k: v[k] for k in ("failed", "nuisance_generated", "seed")} for name, v in toys.items()}
            (out / "toys.json").write_text(json.dumps({"mu": self.branch_data["mu"], **meta}, indent=1))


class InferProfileLikelihood(HSBITask):
    """Observed profile likelihood in mu (nuisance profiled): Wilks and Neyman intervals, for the
    trained estimator and for the exact likelihood; writes result.json and profile.png."""

    config_sections = ("inference",)
    code_modules = ("hsbi.inference", "hsbi.plotting", "hsbi.models", "hsbi.estimators")

    def requires(self) -> dict:
        return {
            "estimator": TrainEstimator.req(self, branch=-1),
            "observed": SimulateObserved.req(self),
            "toys": NeymanToys.req(self, branch=-1),
        }

    def run(self) -> None:
        from hsbi.inference.analysis import infer
        from hsbi.plotting import plot_profile_and_belt

        cfg, reqs = self.analysis, self.requires()
        model = cfg.model.build()
        densities = _densities(cfg, reqs["estimator"], model)
        toys = []
        for branch in reqs["toys"].get_branch_tasks().values():
            art = branch.artifact()
            arrays = art.arrays("toys.npz")
            meta = art.json("toys.json")
            toys.append({name: {"t": arrays[f"t_{name}"], **meta[name]} for name in densities})
        result = self.run_hsbi(infer, cfg, densities, model, _load_observed(reqs["observed"]), toys)
        with self.write() as out:
            (out / "result.json").write_text(json.dumps(result.summary, indent=1) + "\n")
            plot_profile_and_belt(
                out / "profile.png", result.scan_mu, result.scans, result.grid, result.critical,
                truth=cfg.inference.truth.mu, title=f"{cfg.name}: {len(densities[cfg.estimator.kind].members)}-member {cfg.estimator.kind} ensemble vs exact",
            )
        self.publish_message(f"result: {self.output().path}/result.json")


class CoverageStudy(HSBITask):
    """Datasets thrown at the configured truth: coverage of Wilks and Neyman intervals (68.3%,
    95%) with binomial errors and mean widths, for the trained estimator and the exact
    likelihood; writes coverage.json and coverage.png."""

    config_sections = ("inference",)
    code_modules = ("hsbi.inference", "hsbi.plotting", "hsbi.models", "hsbi.estimators")
    ignored_keys = ("inference.neyman", "inference.scan_points", "inference.observed_seed")

    def requires(self) -> dict:
        return {"estimator": TrainEstimator.req(self, branch=-1)}

    def run(self) -> None:
        from hsbi.inference.coverage import coverage_study
        from hsbi.plotting import plot_test_statistic

        cfg = self.analysis
        model = cfg.model.build()
        densities = _densities(cfg, self.requires()["estimator"], model)
        summary, t_values = self.run_hsbi(coverage_study, cfg, densities, model, progress=self.publish_message)
        with self.write() as out:
            (out / "coverage.json").write_text(json.dumps(summary, indent=1) + "\n")
            plot_test_statistic(out / "coverage.png", t_values, {k: summary[k] for k in densities})
        self.publish_message(f"coverage: {self.output().path}/coverage.json")
