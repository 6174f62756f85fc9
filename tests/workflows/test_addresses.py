"""Address propagation through the DAG: a change reaches exactly what it should (no run)."""

import pytest

from workflows.tasks import (
    InferProfileLikelihood,
    NeymanToys,
    SimulateObserved,
    SimulateSamples,
    TrainEstimator,
)


def addresses(*overrides: str) -> dict:
    kw = {"config": "default", "set": tuple(overrides)}

    def branches(cls):
        return [b.address for b in cls(**kw).get_branch_tasks().values()]

    return {
        "SimulateSamples": SimulateSamples(**kw).address,
        "SimulateObserved": SimulateObserved(**kw).address,
        "TrainEstimator": branches(TrainEstimator),
        "NeymanToys": branches(NeymanToys),
        "InferProfileLikelihood": InferProfileLikelihood(**kw).address,
    }


@pytest.fixture(scope="module")
def base():
    return addresses()


@pytest.mark.parametrize(
    "override, changed",
    [
        ("training.learning_rate=0.001", {"TrainEstimator", "NeymanToys", "InferProfileLikelihood"}),
        ("estimator.widths=[32, 32]", {"TrainEstimator", "NeymanToys", "InferProfileLikelihood"}),
        ("simulation.seed=2", {"SimulateSamples", "TrainEstimator", "NeymanToys", "InferProfileLikelihood"}),
        ("inference.truth.mu=0.25", {"SimulateObserved", "NeymanToys", "InferProfileLikelihood"}),
        ("inference.levels=[0.9]", {"InferProfileLikelihood"}),
        ("model.radius=0.5", {"SimulateSamples", "SimulateObserved", "TrainEstimator", "NeymanToys",
                              "InferProfileLikelihood"}),
    ],
)
def test_a_change_propagates_downstream_only(base, override, changed):
    new = addresses(override)
    assert {k for k in base if new[k] != base[k]} == changed
    for key in changed - {"InferProfileLikelihood", "SimulateSamples", "SimulateObserved"}:
        assert not set(new[key]) & set(base[key]), f"{key}: a branch kept its address"


def test_addresses_are_stable_between_instantiations(base):
    assert addresses() == base


def test_more_members_reuse_the_existing_ones(base):
    new = addresses("training.members=5")
    assert new["TrainEstimator"][:3] == base["TrainEstimator"]
    assert new["InferProfileLikelihood"] != base["InferProfileLikelihood"]
    assert new["SimulateSamples"] == base["SimulateSamples"]


def test_a_wider_neyman_grid_reuses_toys_at_shared_points(base):
    new = addresses("inference.neyman.mu_min=0.13", "inference.neyman.points=13")
    assert new["NeymanToys"][2:] == base["NeymanToys"]
