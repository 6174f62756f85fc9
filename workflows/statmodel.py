"""The declared statistical model (``statmodel`` section): CheckDeclaredSamples and
CheckDeclaredData (the ingested samples against the model, before any training), TrainRatio
(one branch per network and member), FitDeclaredModel (the observed fit), DeclaredNeymanToys and
DeclaredBelt (the Neyman belt), DeclaredCoverage and ExportWorkspace (the portable model file);
InferProfileLikelihood, ConfidenceBelt and CoverageStudy run them for such configs."""

from __future__ import annotations

import json

import luigi

from workflows.framework import HSBITask, HSBIWorkflow, UserError
from workflows.ingest import IngestSamples

__all__ = ["CheckDeclaredData", "CheckDeclaredSamples", "DeclaredBelt", "DeclaredCoverage", "DeclaredNeymanToys",
           "ExportPyhf", "ExportWorkspace", "FitDeclaredModel", "TrainRatio", "check_declared", "ingested_dirs"]


def _ingest_branches(task: HSBITask, samples: set[str] | None = None) -> dict[str, HSBITask]:
    """IngestSamples branches of ``samples`` (all if None), keyed ``sample:group`` (made once for
    all branches of a workflow, see ``shared_req``)."""
    ingest = task.shared_req(IngestSamples, branch=-1)
    branch_map, by_sample = ingest.get_branch_map(), ingest.sample_branches
    branches = sorted(b for name in (by_sample if samples is None else samples) for b in by_sample.get(name, ()))
    return {f"{branch_map[b]['sample']}:{branch_map[b]['group']}": task.shared_req(IngestSamples, branch=b)
            for b in branches}


def ingested_dirs(reqs: dict[str, HSBITask]) -> dict[str, list]:
    """Sample name -> its ingested artifact directories, from the ``_ingest_branches`` among
    ``reqs``."""
    dirs: dict[str, list] = {}
    for key, req in sorted(reqs.items()):
        if isinstance(req, IngestSamples):
            dirs.setdefault(key.split(":")[0], []).append(req.artifact().path)
    return dirs


def check_declared(task: HSBITask) -> bool:
    """Whether the config declares a model; a samples section that nothing uses is an error."""
    from hsbi.models import MODELS

    cfg = task.analysis
    if not cfg.statmodel.declared and cfg.samples and not MODELS[cfg.model.name].needs_events:
        raise UserError(f"{task.task_family}: config {task.config} has a samples section but no statmodel: "
                        "declare the statistical model (channels, processes, modifiers) in 'statmodel'; "
                        f"nothing runs the embedded '{cfg.model.name}' model in its place")
    return cfg.statmodel.declared


class CheckDeclaredSamples(HSBITask):
    """The model's ingested MC samples checked before any network trains: event-aligned
    variations hold the nominal's events, every process has a positive expected yield,
    variations positive yield ratios; writes yields.json (yields, yield ratios). The channels'
    observed data do not enter (CheckDeclaredData): the networks trained after it serve a
    blinded (asimov) and an unblinded fit alike."""

    config_sections = ("statmodel",)
    ignored_keys = ("statmodel.normalisation_events", "statmodel.truth")

    def significant_params(self) -> dict:
        params = super().significant_params()
        params["statmodel"]["channels"] = [{k: v for k, v in ch.items() if k != "data"}
                                           for ch in params["statmodel"]["channels"]]
        return params

    def requires(self) -> dict:
        return _ingest_branches(self, self.analysis.statmodel.sample_names(data=False))

    def run(self) -> None:
        from hsbi.inference.declared import check_samples

        summary = self.run_hsbi(check_samples, self.analysis, ingested_dirs(self.requires()))
        with self.write() as out:
            (out / "yields.json").write_text(json.dumps(summary, indent=1) + "\n")


class CheckDeclaredData(HSBITask):
    """The channels' observed data samples have events, checked before any network trains (a
    requirement of the TrainRatio workflow, not of its branches' addresses); writes data.json
    (events per channel)."""

    config_sections = ("statmodel",)
    ignored_keys = CheckDeclaredSamples.ignored_keys

    def requires(self) -> dict:
        statmodel = self.analysis.statmodel
        return _ingest_branches(self, statmodel.sample_names() - statmodel.sample_names(data=False))

    def run(self) -> None:
        from hsbi.inference.declared import check_data

        events = self.run_hsbi(check_data, self.analysis, ingested_dirs(self.requires()))
        with self.write() as out:
            (out / "data.json").write_text(json.dumps(events, indent=1) + "\n")


class TrainRatio(HSBIWorkflow):
    """One branch per (network, member): the nominal ratio of each process and one shape ratio
    per (process, normplusshape NP, direction), each a weighted classifier (Lightning); writes
    the net, its history and, for shape ratios, the closure of the validation split."""

    config_sections = ("estimator", "training")
    ignored_keys = ("training.members", "training.seed", "estimator.combine", "estimator.calibration",
                    "estimator.normalise", "estimator.kind", "estimator.transforms")
    reproducibility = {"rtol": 1e-4, "atol": 1e-5}

    def create_branch_map(self) -> dict[int, dict]:
        from hsbi.data.statmodel import network_inputs, ratio_tasks

        cfg = self.analysis
        nets = [{**net, "inputs": network_inputs(cfg, net), "samples": sorted(self._samples(net))}
                for net in ratio_tasks(cfg)]
        return {i: {**net, "member": m, "seed": cfg.training.seed + m}
                for i, (m, net) in enumerate((m, n) for m in range(cfg.training.members) for n in nets)}

    def _samples(self, net: dict) -> set[str]:
        ch = next(c for c in self.analysis.statmodel.channels if c.name == net["channel"])
        proc = next(p for p in ch.processes if p.name == net["process"])
        if not net["np"]:
            return {s for p in ch.processes for s in p.samples}
        mod = next(m for m in proc.modifiers if m.name == net["np"] and m.type == "normplusshape")
        return {*proc.samples, *(mod.up if net["side"] == "up" else mod.down)}

    def requires(self) -> dict:
        # the checks are the workflow's requirements, for order only: their code (the model's
        # compilation in hsbi.inference) computes nothing a network learns from, and must not
        # reach the networks' addresses (an edit of the fitting code would retrain them)
        return _ingest_branches(self, set(self.branch_data["samples"]))

    def workflow_requires(self) -> dict:
        return {**super().workflow_requires(), "samples": IngestSamples.req(self, branch=-1),
                "checked": CheckDeclaredSamples.req(self), "data": CheckDeclaredData.req(self)}

    def run(self) -> None:
        from hsbi.training.statmodel import train_member

        d = self.branch_data
        label = f"TrainRatio {d['process']}" + (f" {d['np']} {d['side']}" if d["np"] else "") + f" member {d['member']}"
        with self.write() as out:
            report = self.run_hsbi(train_member, self.analysis, ingested_dirs(self.requires()), d, out,
                                   label=label, log=self.publish_message)
            (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")


class FitDeclaredModel(HSBITask):
    """The observed fit of the declared model: best fit, HESSE errors, MINOS intervals of the
    POI, the profile scan, pulls, impacts and correlations (result.json, pulls.png, scan.png,
    correlation.png)."""

    config_sections = ("statmodel", "inference")
    ignored_keys = ("inference.neyman", "inference.coverage", "inference.truth", "inference.poi_bounds",
                    "inference.nuisance_bounds", "inference.constraint", "inference.constraint_sigma",
                    "inference.n_expected")

    def requires(self) -> dict:
        return {"networks": TrainRatio.req(self, branch=-1), **_ingest_branches(self, self.analysis.statmodel.sample_names())}

    def run(self) -> None:
        from hsbi.inference.declared import run_fit

        reqs = self.requires()
        dirs = ingested_dirs(reqs)
        members = [(b.branch_data, b.artifact().path) for b in reqs["networks"].get_branch_tasks().values()]
        with self.write() as out:
            result = self.run_hsbi(run_fit, self.analysis, dirs, members, out, log=self.publish_message)
        self.publish_message(f"result: {self.output().path}/result.json "
                             f"({result['poi']} = {result['best_fit'][result['poi']]:.4g})")


class ExportWorkspace(HSBITask):
    """The declared model as a portable workspace (hsbi.inference.workspace): workspace.json
    (HS3 layout, HistFactory/pyhf modifier names), the per-event arrays of the normalisation
    samples and the observed data, and every network as ONNX; `hsbi fit` refits it without torch.
    Writes workspace/ and export.json (files, sizes)."""

    config_sections = FitDeclaredModel.config_sections
    ignored_keys = FitDeclaredModel.ignored_keys

    def requires(self) -> dict:
        if not check_declared(self):
            raise UserError(f"ExportWorkspace: config {self.config} declares no statistical model: a workspace holds "
                            "the 'statmodel' section's model (channels, processes, modifiers) with its networks")
        return FitDeclaredModel.requires(self)

    def run(self) -> None:
        from hsbi.inference.declared import export_workspace

        reqs = self.requires()
        members = [(b.branch_data, b.artifact().path) for b in reqs["networks"].get_branch_tasks().values()]
        with self.write() as out:
            summary = self.run_hsbi(export_workspace, self.analysis, ingested_dirs(reqs), members, out / "workspace",
                                    log=self.publish_message)
            (out / "export.json").write_text(json.dumps(summary, indent=1) + "\n")
        self.publish_message(f"workspace: {self.output().path}/workspace ({summary['files']} files, "
                             f"{summary['bytes'] / 1e6:.1f} MB); fit it with: hsbi fit {self.output().path}/workspace")


class ExportPyhf(HSBITask):
    """Binned NSBI of the declared model through pyhf: per channel ``--bins`` bins of the learned
    log odds of signal against background, the MC templates with normsys, histosys (from the
    variation samples), staterror and lumi, and the observed data as a pyhf workspace
    (pyhf_workspace.json, schema-validated; hs3_workspace.json the same in HS3's layout); pyhf's fit and hsbi's own binned fit of it beside the
    unbinned interval (binned.json; binned.png: the templates with the data, t(mu) binned and
    unbinned)."""

    config_sections = FitDeclaredModel.config_sections
    ignored_keys = FitDeclaredModel.ignored_keys
    bins = luigi.IntParameter(default=10, description="bins of the learned observable per channel; default: 10")

    def significant_params(self) -> dict:
        return {**super().significant_params(), "bins": int(self.bins)}

    def requires(self) -> dict:
        if not check_declared(self):
            raise UserError(f"ExportPyhf: config {self.config} declares no statistical model: the binned workspace "
                            "is made of the 'statmodel' section's processes and variations")
        if self.bins < 1:
            raise UserError(f"ExportPyhf: --bins {self.bins}: expected a positive number of bins")
        return {**FitDeclaredModel.requires(self), "fit": FitDeclaredModel.req(self)}

    def run(self) -> None:
        from hsbi.inference.declared import export_pyhf
        from hsbi.plotting.statmodel import plot_binned

        reqs = self.requires()
        members = [(b.branch_data, b.artifact().path) for b in reqs["networks"].get_branch_tasks().values()]
        with self.write() as out:
            summary = self.run_hsbi(export_pyhf, self.analysis, ingested_dirs(reqs), members,
                                    reqs["fit"].artifact().json("result.json"), out, int(self.bins),
                                    log=self.publish_message)
            (out / "binned.json").write_text(json.dumps(summary, indent=1) + "\n")
            plot_binned(out / "binned.png", json.loads((out / "pyhf_workspace.json").read_text()), summary["edges"],
                        summary, reqs["fit"].artifact().json("result.json")["scan"])
        self.publish_message("binned: " + ", ".join(
            f"{k}%: pyhf [{v[0]:.4g}, {v[1]:.4g}], unbinned/binned width {summary['width_ratio'].get(k, float('nan')):.3f}"
            for k, v in summary["pyhf"]["intervals"].items()))


def _fit_inputs(task: HSBITask) -> tuple[dict, list, dict]:
    """Ingested directories, TrainRatio members and the observed fit's result of a declared model."""
    reqs = task.requires()
    dirs = ingested_dirs(reqs)
    members = [(b.branch_data, b.artifact().path) for b in reqs["networks"].get_branch_tasks().values()]
    return dirs, members, reqs["fit"].artifact().json("result.json")


class DeclaredNeymanToys(HSBIWorkflow):
    """One branch per point of the declared model's Neyman grid (``inference.neyman.points``
    over mu_hat +- (sqrt(chi2 quantile) + 3) sigma of the observed fit): ``inference.neyman.toys``
    toys at the observed conditional MLE of all NPs, global observables drawn, batched fits;
    writes point.json (t of the toys and of the data, failed fits)."""

    config_sections = ("statmodel", "inference")
    ignored_keys = ("inference.coverage", "inference.truth", "inference.poi_bounds", "inference.nuisance_bounds",
                    "inference.constraint", "inference.constraint_sigma", "inference.n_expected",
                    "inference.scan_points", "inference.neyman.mu_min", "inference.neyman.mu_max",
                    "inference.neyman.method", "inference.neyman.chunk")

    def create_branch_map(self) -> dict[int, dict]:
        neyman = self.analysis.inference.neyman
        return {k: {"point": k, "toys": neyman.toys, "seed": neyman.seed} for k in range(neyman.points)}

    def requires(self) -> dict:
        return {"fit": FitDeclaredModel.req(self), "networks": TrainRatio.req(self, branch=-1),
                **_ingest_branches(self, self.analysis.statmodel.sample_names())}

    def workflow_requires(self) -> dict:
        return {**super().workflow_requires(), "fit": FitDeclaredModel.req(self)}

    def run(self) -> None:
        from hsbi.inference.declared import neyman_point

        point = self.run_hsbi(neyman_point, self.analysis, *_fit_inputs(self), self.branch_data["point"],
                              log=self.publish_message)
        with self.write() as out:
            (out / "point.json").write_text(json.dumps(point) + "\n")


class DeclaredBelt(HSBITask):
    """The declared model's Neyman belt from all DeclaredNeymanToys points: critical values per
    level, failed toys, Neyman intervals beside MINOS (belt.json, belt.png)."""

    config_sections = ("statmodel", "inference")
    ignored_keys = DeclaredNeymanToys.ignored_keys

    def requires(self) -> dict:
        return {"toys": DeclaredNeymanToys.req(self, branch=-1), "fit": FitDeclaredModel.req(self)}

    def run(self) -> None:
        from hsbi.inference.declared import belt_summary
        from hsbi.plotting.statmodel import plot_belt

        reqs = self.requires()
        points = [b.artifact().json("point.json") for b in reqs["toys"].get_branch_tasks().values()]
        belt = self.run_hsbi(belt_summary, self.analysis, points, reqs["fit"].artifact().json("result.json"))
        with self.write() as out:
            (out / "belt.json").write_text(json.dumps(belt, indent=1) + "\n")
            plot_belt(out / "belt.png", belt)
        self.publish_message(f"belt: {self.output().path}/belt.json " + ", ".join(
            f"{k}%: [{v['low']:.4g}, {v['high']:.4g}]" for k, v in belt["intervals"].items()))


class DeclaredCoverage(HSBITask):
    """Coverage of the declared model at ``statmodel.truth`` from toys of the model:
    ``inference.coverage.datasets`` datasets and twice as many reference toys, Neyman and Wilks
    coverage per level with binomial errors (coverage.json, coverage.png)."""

    config_sections = ("statmodel", "inference")
    #: the simulator models' coverage keys (method, reference, width_datasets) do not apply
    ignored_keys = ("inference.neyman", "inference.truth", "inference.poi_bounds", "inference.nuisance_bounds",
                    "inference.constraint", "inference.constraint_sigma", "inference.n_expected",
                    "inference.scan_points", "inference.observed_seed", "inference.coverage.method",
                    "inference.coverage.reference", "inference.coverage.width_datasets")

    def requires(self) -> dict:
        return {"networks": TrainRatio.req(self, branch=-1), **_ingest_branches(self, self.analysis.statmodel.sample_names())}

    def run(self) -> None:
        import numpy as np

        from hsbi.inference.declared import declared_coverage
        from hsbi.plotting import plot_test_statistic

        reqs = self.requires()
        members = [(b.branch_data, b.artifact().path) for b in reqs["networks"].get_branch_tasks().values()]
        summary, t = self.run_hsbi(declared_coverage, self.analysis, ingested_dirs(reqs), members,
                                   log=self.publish_message)
        shown = {"hsbi": {k: {"asymptotic": {"value": c["wilks_coverage"], "error": c["wilks_error"]},
                              "neyman": {"value": c["coverage"], "error": c["error"]}}
                          for k, c in summary["levels"].items()}}
        with self.write() as out:
            (out / "coverage.json").write_text(json.dumps(summary, indent=1) + "\n")
            plot_test_statistic(out / "coverage.png", {"hsbi": t[np.isfinite(t)]}, shown,
                                title=f"{summary['poi']} = {summary['truth'][summary['poi']]:.4g}: "
                                      f"{summary['datasets']} toys of the declared model")
        self.publish_message(f"coverage: {self.output().path}/coverage.json")
