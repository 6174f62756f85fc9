"""Cross-training folds: TrainEstimator branches over (member seed, fold) of the train split."""

from __future__ import annotations

import numpy as np
import pytest

from hsbi.data import fold_samples
from hsbi.exceptions import DataError
from helpers import MICRO_CONFIG, run_law


def _samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 10), ("val", 4)):
        for cls in ("signal", "reference"):
            out[f"{split}_{cls}_x"] = rng.normal(size=(n, 2))
            out[f"{split}_{cls}_z"] = rng.uniform(size=n)
    return out


def test_folds_partition_the_train_split_and_keep_the_val_split_out():
    samples, folds = _samples(), 3
    parts = [fold_samples(samples, f, folds) for f in range(folds)]
    for key in ("signal_x", "signal_z", "reference_x", "reference_z"):
        vals = [p[f"val_{key}"] for p in parts]
        assert np.array_equal(np.concatenate(vals), samples[f"train_{key}"])  # each event validated once
        for p, v in zip(parts, vals):
            assert len(p[f"train_{key}"]) + len(v) == len(samples[f"train_{key}"])
            assert not {r.tobytes() for r in np.atleast_2d(p[f"train_{key}"])} & {r.tobytes() for r in np.atleast_2d(v)}
            assert np.array_equal(p[f"heldout_{key}"], samples[f"val_{key}"])  # the Ensemble step's data


def test_bad_fold_requests_name_the_problem():
    with pytest.raises(DataError, match="fold 3: expected 0 <= fold < training.folds = 3"):
        fold_samples(_samples(), 3, 3)
    with pytest.raises(DataError, match="too few for 11 folds"):
        fold_samples(_samples(), 10, 11)


@pytest.mark.slow
def test_train_estimator_branches_over_members_and_folds(tmp_path):
    """A real ``law run TrainEstimator`` with 2 folds: one branch per (member, fold), different
    networks per fold; one more member reuses the existing (member, fold) branches."""
    from hsbi.store import Store

    store = tmp_path / "store"
    proc = run_law(store, "TrainEstimator", "--config", str(MICRO_CONFIG), "--set", "training.folds=2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    first = set(Store(store).addresses("TrainEstimator"))
    assert len(first) == 2
    weights = [(Store(store).path("TrainEstimator", a) / "weights.safetensors").read_bytes() for a in sorted(first)]
    assert weights[0] != weights[1]
    proc = run_law(store, "TrainEstimator", "--config", str(MICRO_CONFIG), "--set",
                   "training.folds=2,training.members=2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert first < set(Store(store).addresses("TrainEstimator")) and len(Store(store).addresses("TrainEstimator")) == 4
