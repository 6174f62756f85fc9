"""HiggsStudy: the HiggsML 2014 case study (LRE and DLE side by side) in one command."""

from __future__ import annotations

from pathlib import Path

import law
import luigi

from workflows.framework import HSBITask
from workflows.ingest import IngestSamples
from workflows.tasks import ConfidenceBelt, CoverageStudy, Ensemble, InferProfileLikelihood, _model

__all__ = ["HiggsStudy"]

#: the study's analysis config (relative paths in it are relative to its folder)
HIGGS_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "higgs.yaml"


class HiggsStudy(HSBITask):
    """Every estimator kind of ``--kinds`` trained on the config's ingested events; the observed
    intervals (InferProfileLikelihood, with its ConfidenceBelt), coverage at each (mu, alpha) of
    ``--mu-points`` x ``--alpha-points`` (CoverageStudy) and report.md with its plots."""

    config = luigi.Parameter(default=str(HIGGS_CONFIG), description="analysis config (YAML path); "
                             "default: configs/higgs.yaml (the HiggsML 2014 extract)")
    kinds = law.CSVParameter(default=("lre", "dle"), description="estimator kinds compared; default: lre,dle")
    mu_points = law.CSVParameter(cls=luigi.FloatParameter, default=(0.1, 0.2, 0.3),
                                 description="signal fractions of the coverage points; default: 0.1,0.2,0.3")
    alpha_points = law.CSVParameter(cls=luigi.FloatParameter, default=(0.93, 1.0, 1.07),
                                    description="TES factors of the coverage points; default: 0.93,1.0,1.07")

    config_sections = ("model",)
    code_modules = ("hsbi.inference.study", "hsbi.plotting.study")
    # run.md/run.json record how long the upstream artifacts took: present, never compared
    reproducibility = {"volatile": ["run.md", "run.json"]}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from hsbi.inference.study import check_study_points

        self.run_hsbi(check_study_points, self.analysis.model.build(), self.analysis.inference.nuisance_bounds,
                      self.mu_points, self.alpha_points)

    def _kind(self, kind: str, *extra: str) -> dict:
        return {"config": self.config, "set": (*self.set, f"estimator.kind={kind}", *extra)}

    def requires(self) -> dict:
        reqs: dict = {"events": IngestSamples.req(self, branch=-1)}
        for kind in self.kinds:
            reqs[f"infer_{kind}"] = InferProfileLikelihood(**self._kind(kind))
            reqs[f"belt_{kind}"] = ConfidenceBelt(**self._kind(kind))
            if kind == "lre":
                reqs["ensemble"] = Ensemble(**self._kind(kind))
            for mu in self.mu_points:
                for a in self.alpha_points:
                    reqs[f"coverage_{kind}_{mu:g}_{a:g}"] = CoverageStudy(**self._kind(
                        kind, f"inference.truth.mu={mu!r}", f"inference.truth.nuisance={a!r}"))
        return reqs

    def significant_params(self) -> dict:
        return {**super().significant_params(), "kinds": list(self.kinds)}

    def rerun_args(self) -> list[str]:
        return ["--kinds", ",".join(self.kinds), "--mu-points", ",".join(f"{m!r}" for m in self.mu_points),
                "--alpha-points", ",".join(f"{a!r}" for a in self.alpha_points)]

    def run(self) -> None:
        from hsbi.inference.study import study_report
        from hsbi.store.tools import run_timing

        reqs = {k: v.artifact() for k, v in self.requires().items() if k != "events"}
        dirs = [b.artifact().path for b in self.requires()["events"].get_branch_tasks().values()]
        images = {f"profile_{k}": reqs[f"infer_{k}"].path / "profile.png" for k in self.kinds}
        images |= {f"belt_{k}": reqs[f"belt_{k}"].path / "belt.png" for k in self.kinds}
        if "ensemble" in reqs:
            images |= {n: reqs["ensemble"].path / f"{n}.png" for n in ("closure", "calibration")}
        results = {k: reqs[f"infer_{k}"].json("result.json") for k in self.kinds}
        coverage = {k: [a.json("coverage.json") for n, a in reqs.items() if n.startswith(f"coverage_{k}_")]
                    for k in self.kinds}
        addresses = [a for v in self.input_addresses().values() for a in (v if isinstance(v, list) else [v])]
        timing = run_timing(self.store, addresses)
        with self.write() as out:
            self.run_hsbi(study_report, out, self.analysis, _model(self, "test"), dirs, results, coverage,
                          images, self.alpha_points, timing)
        self.publish_message(f"report: {self.output().path}/report.md")
