"""Bad input on the command line: one line naming the key or file, and a non-zero exit."""

import pytest

from helpers import MICRO_CONFIG, ROOT


def _one_error_line(proc) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stdout, proc.stdout
    errors = [line for line in lines if line.startswith("hsbi: error:")]
    assert len(errors) == 1, proc.stdout
    return errors[0]


def test_missing_config_file(law_run, tmp_path):
    proc = law_run("InferProfileLikelihood", "--config", str(tmp_path / "missing.yaml"))
    assert "missing.yaml does not exist" in _one_error_line(proc)


def test_unknown_config_key(law_run, tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("training:\n  max_epoch: 3\n")
    line = _one_error_line(law_run("InferProfileLikelihood", "--config", str(cfg)))
    assert "typo.yaml" in line and "unknown config key 'training.max_epoch'" in line


@pytest.mark.parametrize(
    "override, expected",
    [
        ("inference.truth.mu=-0.2", "'inference.truth.mu' = -0.2: expected a signal fraction"),
        ("training.learning_rate=-1", "'training.learning_rate' = -1.0: expected a positive number"),
    ],
)
def test_bad_values(law_run, override, expected):
    line = _one_error_line(law_run("InferProfileLikelihood", "--set", override))
    assert expected in line


def test_store_untouched_by_bad_input(law_run, store_root):
    law_run("InferProfileLikelihood", "--set", "inference.truth.mu=-0.2")
    assert not store_root.exists() or not any(p.name != ".tmp" for p in store_root.iterdir())


def test_tiny_config_exists():
    assert (ROOT / "tests" / "data" / "tiny.yaml").is_file()


#: Analysis configs with one bad input each (the on/off ones keep the Neyman grid in [0, 1]).
ON_OFF = "model: {name: on_off, nuisance_reference: 1.0%s}\n" \
         "inference: {truth: {mu: %s, nuisance: 1}, n_expected: 1, constraint: none, " \
         "neyman: {mu_min: 0.2, mu_max: 0.8}}\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (ON_OFF % ("", 50), "'inference.truth.mu' = 50.0: expected a signal strength (signal yield / s) in [0, 40]"),
        (ON_OFF % (", parameters: {signal_mean: 0, signal_sigma: 3}", 0.5),
         "'inference.constraint' = 'none': expected 'gaussian' or 'lognormal': the data alone do not determine"),
        ("inference: {poi_bounds: [0, 0.2], neyman: {mu_min: 0.15, mu_max: 0.25}}",
         "'inference.neyman.mu_min/mu_max' = (0.15, 0.25): expected a grid "
                                              "inside the POI bounds [0, 0.2]"),
        ("inference: {constraint: lognormal, nuisance_bounds: [0.1, 1.5], neyman: {method: pool}}",
         "'inference.neyman.method' = 'pool': expected 'simulator' with inference.constraint: lognormal"),
    ],
    ids=["poi-outside-bounds", "nuisance-not-identified", "grid-outside-bounds", "lognormal-pool"],
)
def test_bad_likelihood_declarations(law_run, store_root, tmp_path, text, expected):
    cfg = tmp_path / "analysis.yaml"
    cfg.write_text(text)
    line = _one_error_line(law_run("InferProfileLikelihood", "--config", str(cfg)))
    assert "analysis.yaml" in line and expected in line
    assert not store_root.exists() or not any(p.name != ".tmp" for p in store_root.iterdir())


def test_non_finite_nll_at_the_start_point(law_run, store_root):
    """An ensemble member whose networks output NaN (a diverged training, stored as a valid
    artifact): NeymanToys stops with one line naming the density, the point, the first event and
    process; no toys and no result are written."""
    import torch

    from hsbi.estimators import RatioNet, save_member
    from workflows.tasks import TrainEstimator

    task = TrainEstimator(config=str(MICRO_CONFIG), branch=0)
    cfg, model = task.analysis, task.analysis.model.build()
    nets = {proc: RatioNet(model.n_features, cfg.estimator.widths, cfg.estimator.activation)
            for proc in model.processes}
    with torch.no_grad():
        for net in nets.values():
            for p in net.parameters():
                p.fill_(float("nan"))
    with task.write() as out:
        save_member(out, nets)
        (out / "history.json").write_text("{}\n")
    proc = law_run("InferProfileLikelihood", "--config", str(MICRO_CONFIG))
    assert proc.returncode != 0 and "Traceback" not in proc.stdout, proc.stdout
    # luigi logs a failure in run() once per failed branch (both Neyman points fail alike)
    (line,) = {line[line.index("hsbi: error:"):] for line in proc.stdout.splitlines() if "hsbi: error:" in line}
    assert "NeymanToys" in line and "the NLL is not finite at mu = 0.5, nuisance = 0: event 0 (x = [" in line
    assert line.endswith("has log density nan for process 'signal'")
    assert not (store_root / "NeymanToys").exists() and not (store_root / "InferProfileLikelihood").exists()


def test_list_valued_set_on_the_command_line(law_run):
    proc = law_run("SimulateObserved", "--set", "inference.poi_bounds=[0,0.9],inference.truth.mu=0.3",
                   "--print-status", "0")
    assert proc.returncode == 0 and "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert "SimulateObserved" in proc.stdout
