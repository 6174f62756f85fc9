"""Real `law run`s on the tiny and micro configs: outputs, reuse, invalidation, toy chunks."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from hsbi.config import load_config
from hsbi.inference import throw_toys
from hsbi.store import Store
from helpers import MICRO_CONFIG, ROOT, TINY_CONFIG, law_env

pytestmark = pytest.mark.slow


def _dirs(store, family):
    path = store / family
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_end_to_end_reuse_and_invalidation(law_run, store_root):
    args = ("--config", str(TINY_CONFIG))
    first = law_run("InferProfileLikelihood", *args)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "TrainEstimator member 1" in first.stdout

    (result_dir,) = _dirs(store_root, "InferProfileLikelihood")
    out = store_root / "InferProfileLikelihood" / result_dir
    result = json.loads((out / "result.json").read_text())
    for block in (result, result["exact"]):
        assert {"best_fit", "intervals"} <= set(block)
        for kind in ("asymptotic", "neyman", "expected"):
            for level in ("68", "95"):
                low, high = block["intervals"][kind][level]
                assert 0 <= low < high <= 1
    # MINOS on the continuous exact NLL reproduces the grid profile's Wilks edges
    for level in ("68", "95"):
        assert result["exact"]["intervals"]["minos"][level] == pytest.approx(
            result["exact"]["intervals"]["asymptotic"][level], abs=2e-3 * np.ptp(result["exact"]["intervals"]["asymptotic"][level]))
    assert result["poi"] == "mu" and result["truth"]["mu"] == 0.2
    assert (out / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run does no work
    second = law_run("InferProfileLikelihood", *args)
    assert second.returncode == 0
    assert "TrainEstimator member" not in second.stdout and "NeymanToys mu" not in second.stdout
    assert _dirs(store_root, "InferProfileLikelihood") == [result_dir]

    # ... and imports neither torch, Lightning, Ray, numba nor scipy's special functions or
    # statistics (seconds of start-up on every law command)
    heavy = ("torch", "lightning", "ray", "numba", "scipy.special", "scipy.stats")
    code = (f"import sys\nsys.argv = ['law', 'run', 'InferProfileLikelihood', '--config', {str(TINY_CONFIG)!r}]\n"
            "from law.cli import run\ntry:\n    code = run()\nexcept SystemExit as stop:\n    code = stop.code\n"
            f"print('exit', code, 'heavy', sorted(m for m in {heavy!r} if m in sys.modules))")
    noop = subprocess.run([sys.executable, "-c", code], env=law_env(store_root), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, check=False)
    assert noop.stdout.strip().splitlines()[-1] in ("exit 0 heavy []", "exit None heavy []"), noop.stdout[-2000:]

    # --print-output shows where the result is
    shown = law_run("InferProfileLikelihood", *args, "--print-output", "0")
    assert str(out) in shown.stdout

    # one training parameter: training and inference re-run, simulation does not
    changed = law_run("InferProfileLikelihood", *args, "--set", "training.learning_rate=0.002")
    assert changed.returncode == 0, changed.stdout[-3000:]
    assert len(_dirs(store_root, "SimulateSamples")) == 1
    assert len(_dirs(store_root, "SimulateObserved")) == 1
    assert len(_dirs(store_root, "TrainEstimator")) == 4
    assert len(_dirs(store_root, "InferProfileLikelihood")) == 2
    assert not list((store_root / ".tmp").iterdir())
    assert re.search(r"TrainEstimator member 0 signal: epoch 2/2", changed.stdout)


def test_more_toys_per_point_reuse_the_existing_chunks(law_run, store_root):
    """micro: 2 points x 2 chunks of 5 toys; 15 toys per point add one chunk per point and reuse
    the 4 others; a chunk's stored datasets are those its recorded seed throws."""
    args = ("--config", str(MICRO_CONFIG))
    first = law_run("InferProfileLikelihood", *args, "--set", "inference.neyman.chunk=5")
    assert first.returncode == 0, first.stdout[-3000:]
    before = _dirs(store_root, "NeymanToys")
    assert len(before) == 4 and "NeymanToys mu=0.3 chunk 1 [exact]: 5/5 simulator toys" in first.stdout
    (infer,) = _dirs(store_root, "InferProfileLikelihood")
    result = json.loads((store_root / "InferProfileLikelihood" / infer / "result.json").read_text())
    assert result["details"]["exact"]["toys"]["per_point"] == 10
    assert isinstance(result["details"]["lre"]["toys"]["failed_fits"], int)

    more = law_run("ConfidenceBelt", *args, "--set", "inference.neyman.chunk=5,inference.neyman.toys=15")
    assert more.returncode == 0, more.stdout[-3000:]
    assert "chunk 2 [lre]" in more.stdout and "chunk 0 [" not in more.stdout and "chunk 1 [" not in more.stdout
    after = _dirs(store_root, "NeymanToys")
    assert set(before) < set(after) and len(after) == 6
    belts = [json.loads((store_root / "ConfidenceBelt" / d / "belt.json").read_text())
             for d in _dirs(store_root, "ConfidenceBelt")]
    (belt,) = [b for b in belts if b["toys_per_point"] == 15]
    for name in ("lre", "exact"):
        points = belt["densities"][name]["points"]
        assert [p["toys"] for p in points] == [15, 15]
        assert belt["densities"][name]["failed_fits"] == sum(p["failed_fits"] for p in points)

    cfg = load_config(MICRO_CONFIG)
    art = Store(store_root).open("NeymanToys", before[0])
    meta, datasets = art.json("toys.json"), art.arrays("datasets.npz")
    gen = meta["densities"]["exact"]
    toys = throw_toys(cfg.model.build(), meta["mu"], gen["nuisance_generated"], cfg.inference.n_expected,
                      cfg.inference.constraint_sigma, meta["toys"], gen["seed"])
    assert np.array_equal(np.concatenate([t.x for t in toys]).astype(np.float32), datasets["x_exact"])
    assert np.array_equal([t.aux for t in toys], datasets["aux_exact"])


def test_flow_estimators_feed_the_same_inference(law_run, store_root):
    """``estimator.kind: dle`` (zuko flows): the same DAG, no Ensemble step, result under 'dle'."""
    proc = law_run("InferProfileLikelihood", "--config", str(MICRO_CONFIG), "--set", "estimator.kind=dle")
    assert proc.returncode == 0, proc.stdout[-3000:]
    (result_dir,) = _dirs(store_root, "InferProfileLikelihood")
    result = json.loads((store_root / "InferProfileLikelihood" / result_dir / "result.json").read_text())
    assert result["estimator"] == "dle" and "exact" in result
    low, high = result["intervals"]["asymptotic"]["68"]
    assert 0 <= low < result["best_fit"]["mu"] < high <= 1
    assert not _dirs(store_root, "Ensemble")
