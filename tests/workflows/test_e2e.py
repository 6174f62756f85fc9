"""A real `law run InferProfileLikelihood` on a tiny config: outputs, reuse, invalidation."""

import json
import re

import pytest

from helpers import TINY_CONFIG

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
        for kind in ("asymptotic", "neyman"):
            for level in ("68", "95"):
                low, high = block["intervals"][kind][level]
                assert 0 <= low < high <= 1
    assert result["poi"] == "mu" and result["truth"]["mu"] == 0.2
    assert (out / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run does no work
    second = law_run("InferProfileLikelihood", *args)
    assert second.returncode == 0
    assert "TrainEstimator member" not in second.stdout and "NeymanToys mu" not in second.stdout
    assert _dirs(store_root, "InferProfileLikelihood") == [result_dir]

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
