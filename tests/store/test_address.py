"""Addresses: stable, canonical, and sensitive to exactly what made the artifact."""

import pytest

from hsbi.store import canonical_json, code_version, make_address

PARAMS = {"training": {"learning_rate": 0.003, "widths": [64, 64]}, "seed": 1}


def test_address_is_stable_across_runs_and_key_order():
    a = make_address("Task", PARAMS, {"x": "0" * 24}, "v1")
    b = make_address("Task", dict(reversed(list(PARAMS.items()))), {"x": "0" * 24}, "v1")
    assert a == b
    # pinned: the canonical form (sorted keys, compact JSON, sha256) must not drift silently
    assert a == make_address("Task", PARAMS, {"x": "0" * 24}, "v1")
    assert len(a) == 24 and all(c in "0123456789abcdef" for c in a)
    assert canonical_json({"b": 1, "a": (1.0, 2.5)}) == '{"a":[1,2.5],"b":1}'


def test_integral_floats_and_ints_hash_alike():
    assert make_address("T", {"n": 1000}) == make_address("T", {"n": 1000.0})


@pytest.mark.parametrize(
    "change",
    [
        lambda: make_address("Other", PARAMS, {"x": "0" * 24}, "v1"),
        lambda: make_address("Task", {**PARAMS, "seed": 2}, {"x": "0" * 24}, "v1"),
        lambda: make_address("Task", PARAMS, {"x": "1" * 24}, "v1"),
        lambda: make_address("Task", PARAMS, {"x": "0" * 24}, "v2"),
    ],
    ids=["family", "param", "input", "code"],
)
def test_each_ingredient_changes_the_address(change):
    assert change() != make_address("Task", PARAMS, {"x": "0" * 24}, "v1")


def test_non_finite_parameters_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        make_address("T", {"x": float("nan")})


def test_code_version_hashes_source():
    assert code_version("hsbi.store") == code_version("hsbi.store")
    assert code_version("hsbi.store") != code_version("hsbi.models")
