"""Address propagation through the DAG: a change reaches exactly what it should (no run)."""

import pytest

from workflows.tasks import (
    ConfidenceBelt,
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
        "ConfidenceBelt": ConfidenceBelt(**kw).address,
        "InferProfileLikelihood": InferProfileLikelihood(**kw).address,
    }


@pytest.fixture(scope="module")
def base():
    return addresses()


@pytest.mark.parametrize(
    "override, changed",
    [
        ("training.learning_rate=0.001", {"TrainEstimator", "NeymanToys", "ConfidenceBelt", "InferProfileLikelihood"}),
        ("estimator.widths=[32, 32]", {"TrainEstimator", "NeymanToys", "ConfidenceBelt", "InferProfileLikelihood"}),
        ("simulation.seed=2", {"SimulateSamples", "TrainEstimator", "NeymanToys", "ConfidenceBelt",
                               "InferProfileLikelihood"}),
        ("inference.truth.mu=0.25", {"SimulateObserved", "NeymanToys", "ConfidenceBelt", "InferProfileLikelihood"}),
        # the widest level sizes the default grid (inference.neyman.mu_min/mu_max: null): kept here
        ("inference.levels=[0.6827, 0.9, 0.95]", {"ConfidenceBelt", "InferProfileLikelihood"}),
        ("inference.scan_points=61", {"InferProfileLikelihood"}),
        ("inference.neyman.method=pool", {"NeymanToys", "ConfidenceBelt", "InferProfileLikelihood"}),
        ("model.radius=0.5", {"SimulateSamples", "SimulateObserved", "TrainEstimator", "NeymanToys",
                              "ConfidenceBelt", "InferProfileLikelihood"}),
    ],
)
def test_a_change_propagates_downstream_only(base, override, changed):
    new = addresses(override)
    assert {k for k in base if new[k] != base[k]} == changed
    for key in changed - {"InferProfileLikelihood", "ConfidenceBelt", "SimulateSamples", "SimulateObserved"}:
        assert not set(new[key]) & set(base[key]), f"{key}: a branch kept its address"


def test_addresses_are_stable_between_instantiations(base):
    assert addresses() == base


def test_more_members_reuse_the_existing_ones(base):
    new = addresses("training.members=5")
    assert new["TrainEstimator"][:3] == base["TrainEstimator"]
    assert new["InferProfileLikelihood"] != base["InferProfileLikelihood"]
    assert new["SimulateSamples"] == base["SimulateSamples"]


def test_a_wider_neyman_grid_reuses_toys_at_shared_points():
    old = addresses("inference.neyman.mu_min=0.15", "inference.neyman.mu_max=0.25")
    new = addresses("inference.neyman.mu_min=0.13", "inference.neyman.mu_max=0.25", "inference.neyman.points=13")
    assert new["NeymanToys"][2:] == old["NeymanToys"]


def test_more_toys_per_point_add_chunks_and_keep_the_existing_ones():
    few = addresses("inference.neyman.chunk=100")
    more = addresses("inference.neyman.chunk=100", "inference.neyman.toys=300")
    assert len(few["NeymanToys"]) == 22 and len(more["NeymanToys"]) == 33
    for point in range(11):  # point-major: chunks 0, 1 of each point are reused, chunk 2 is new
        assert more["NeymanToys"][3 * point : 3 * point + 2] == few["NeymanToys"][2 * point : 2 * point + 2]
    assert more["ConfidenceBelt"] != few["ConfidenceBelt"]


def test_a_branch_address_depends_on_its_point_and_chunk_not_on_its_index():
    tasks = NeymanToys(config="default", set=("inference.neyman.chunk=50", "inference.neyman.mu_min=0.15",
                                              "inference.neyman.mu_max=0.25")).get_branch_tasks()
    data = [(t.branch_data["mu"], t.branch_data["chunk"]) for t in tasks.values()]
    assert data[:5] == [(0.15, 0), (0.15, 1), (0.15, 2), (0.15, 3), (0.16, 0)]
    assert len({t.address for t in tasks.values()}) == len(tasks) == 44
