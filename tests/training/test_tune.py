"""Hyper-parameter search: closure metrics, the tune: section, and a real tiny Ray Tune run (ASHA)
on a Ray cluster started here with `ray start --head` (as in a SLURM allocation)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from hsbi.config import load_config
from hsbi.config.tune import apply_tuned, check_ray_address
from hsbi.data import simulate_training_samples
from hsbi.diagnostics.closure import closure_metrics
from hsbi.exceptions import ConfigError
from hsbi.training import train_lre_member

TUNE_CONFIG = Path(__file__).resolve().parents[1] / "data" / "tune.yaml"


def micro(**tune):  # -> AnalysisConfig
    """tests/data/tune.yaml (micro.yaml and a search of 3 trials, 2 epochs per classifier)."""
    return load_config(TUNE_CONFIG, {"tune": tune})


def _free_port() -> int:
    """A free port outside Ray's default worker port range (10002-19999), which the head
    refuses to share ("trying to use a port number ... used by other components")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


# --- closure metrics -----------------------------------------------------------------------------


def test_closure_metrics_exact_ratio_closes():
    """Reference N(0, 1) reweighted by the exact ratio to N(0.5, 1) reproduces the numerator: the
    mean chi2/ndf over 8 features is 1 within 4 sigma (sd sqrt(2 / 19 / 8) = 0.115); unit
    weights do not close (chi2/ndf >> 1, Wasserstein ~ the shift 0.5 in units of sigma)."""
    rng = np.random.default_rng(5)
    features, n = 8, 20000
    numerator = rng.normal(0.5, 1.0, (n, features))
    reference = rng.normal(0.0, 1.0, (n, features))
    exact = np.exp(0.5 * reference[:, 0] - 0.125)  # the ratio of feature 0 only ...
    reference[:, 1:] = rng.normal(0.5, 1.0, (n, features - 1))  # ... the others already match
    good = closure_metrics({"p": numerator}, reference, {"p": exact})
    bad = closure_metrics({"p": numerator}, reference, {"p": np.ones(n)})
    assert abs(good["closure_chi2_ndf"] - 1.0) < 4 * math.sqrt(2 / 19 / features), good
    assert bad["closure_chi2_ndf"] > 10, bad
    # Wasserstein: sampling noise ~ sqrt(2 / n) = 0.01 per feature when closed; without weights
    # feature 0 is off by the shift, 0.5 sigma, so the mean over features is ~ 0.5 / 8
    assert good["closure_wasserstein"] < 0.03, good
    assert 0.45 < bad["closure_wasserstein"] * features < 0.65, bad


# --- the tune: section ---------------------------------------------------------------------------


def test_space_is_validated_per_key():
    cfg = micro()
    assert cfg.tune.space == {"training.learning_rate": ("loguniform", 1e-3, 3e-2),
                              "estimator.widths": ("choice", ((16,), (32, 32)))}
    with pytest.raises(ConfigError, match=r"unknown search key 'tune.space.training.lr'; searchable keys: .*training.learning_rate"):
        micro(space={"training.lr": ["uniform", 1, 2]})
    with pytest.raises(ConfigError, match=r"'tune.space.training.members'"):
        micro(space={"training.members": ["randint", 1, 3]})
    with pytest.raises(ConfigError, match=r"'tune.space.estimator.widths' = \[32, 0\]: expected a non-empty list of positive"):
        micro(space={"estimator.widths": ["choice", [[32, 0]]]})
    with pytest.raises(ConfigError, match=r"'tune.space.training.learning_rate' = \['normal', 1, 2\]: expected \[distribution"):
        micro(space={"training.learning_rate": ["normal", 1, 2]})
    with pytest.raises(ConfigError, match=r"'tune.objective' = 'best'"):
        micro(objective="best")


def test_apply_tuned_round_trips_json():
    cfg = micro()
    tuned = apply_tuned(cfg, json.loads(json.dumps({"estimator.widths": [16], "training.learning_rate": 0.01})))
    assert tuned.estimator.widths == (16,) and tuned.training.learning_rate == 0.01
    assert tuned.simulation == cfg.simulation and tuned.estimator.activation == cfg.estimator.activation


def test_unreachable_ray_address_fails_fast():
    port = _free_port()  # nothing listens there any more
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"--ray-address '127.0.0.1:{port}': no Ray cluster answers there"):
        check_ray_address(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="expected host:port"):
        check_ray_address("nohost")
    assert time.monotonic() - start < 10


def test_closure_objective_needs_ratio_estimators():
    from hsbi.training.tune import tune_hyperparameters

    cfg = load_config(TUNE_CONFIG, {"estimator": {"kind": "dle"}})
    with pytest.raises(ConfigError, match="closure needs ratio estimators"):
        tune_hyperparameters({}, ("signal", "background"), cfg)


# --- a real search on a Ray cluster started here -------------------------------------------------


@pytest.fixture
def ray_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`ray start --head --block` with token authentication (a token of its own) in a process
    group of its own; yields its address; the group is stopped afterwards."""
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    port = _free_port()
    log = (tmp_path / "ray_head.log").open("w")
    ray = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", "--block"],
        env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                check_ray_address(f"127.0.0.1:{port}")
                break
            except ConfigError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start --head did not come up: {(tmp_path / 'ray_head.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_group(head)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group that ``proc`` leads; after it ended (or 3 s: `ray start
    --block` takes its time) SIGKILL to whatever of the group is left."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 20)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass


def test_search_on_an_existing_cluster(ray_head):
    """3 trials with ASHA on the cluster: statuses and rungs consistent, the best trial is the
    lowest closure among the longest-running ones, and re-training its member with the same seed
    outside Ray reproduces the metrics it reported."""
    from hsbi.training.tune import tune_hyperparameters

    cfg = micro()
    model = cfg.model.build()
    samples = simulate_training_samples(model, cfg)
    lines: list[str] = []
    result = tune_hyperparameters(samples, model.processes, cfg, ray_address=ray_head, progress=lines.append)

    max_t, rungs = 2 * 2, {1, 2}  # grace 1, reduction factor 2
    assert len(result.trials) == 3 and len(lines) == 3 and result.objective == "closure_chi2_ndf"
    for trial in result.trials:
        assert trial["status"] in ("completed", "stopped"), trial
        assert trial["iterations"] == max_t if trial["status"] == "completed" else trial["iterations"] in rungs
        rows = [h for h in result.history if h["trial"] == trial["trial"]]
        assert [h["iteration"] for h in rows] == list(range(1, trial["iterations"] + 1))
        assert [h["process"] for h in rows] == [model.processes[(i - 1) // 2] for i in range(1, len(rows) + 1)]
        assert 1e-3 <= trial["training.learning_rate"] <= 3e-2 and trial["estimator.widths"] in ([16], [32, 32])
    completed = [t for t in result.trials if t["status"] == "completed"]
    best = min(completed, key=lambda t: t["closure_chi2_ndf"])
    assert result.metrics["trial"] == best["trial"] and result.best == {
        "training.learning_rate": best["training.learning_rate"], "estimator.widths": best["estimator.widths"]}

    tuned = apply_tuned(cfg, result.best)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trial (tune.cpus_per_trial)
    try:
        nets, history = train_lre_member(
            samples, model.processes, tuned.estimator, dataclasses.replace(tuned.training, max_epochs=2),
            seed=cfg.tune.seed, log=lambda line: None,
        )
    finally:
        torch.set_num_threads(threads)
    x_ref, z_ref = samples["val_reference_x"], samples["val_reference_z"]
    with torch.inference_mode():
        weights = {p: np.exp(nets[p](torch.as_tensor(np.c_[x_ref, z_ref])).double().numpy()) for p in nets}
    again = closure_metrics({p: samples[f"val_{p}_x"] for p in nets}, x_ref, weights)
    again["val_loss"] = float(np.mean([history[p][-1]["val_loss"] for p in nets]))
    for key, value in again.items():
        assert result.metrics[key] == pytest.approx(value, rel=1e-5), key
