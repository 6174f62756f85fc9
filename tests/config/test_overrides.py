"""`--set` overrides: commas split keys, but not inside brackets, braces or quotes."""

import pytest

from hsbi.config import load_config
from hsbi.config.loader import split_overrides
from hsbi.exceptions import ConfigError


@pytest.mark.parametrize("text, items", [
    ("a=1,b=2", ("a=1", "b=2")),
    ("inference.poi_bounds=[0,5]", ("inference.poi_bounds=[0,5]",)),
    ("x={a: 1, b: [2, 3]},y=4", ("x={a: 1, b: [2, 3]}", "y=4")),
    ('name="a,b",c=\'d,e\'', ('name="a,b"', "c='d,e'")),
    ("", ()),
])
def test_split_overrides(text, items):
    assert split_overrides(text) == items


def test_list_and_mapping_overrides_load():
    cfg = load_config("default", split_overrides("inference.poi_bounds=[0,0.9],training.max_epochs=2"))
    assert tuple(cfg.inference.poi_bounds) == (0, 0.9) and cfg.training.max_epochs == 2
    cfg = load_config("default", split_overrides("model.parameters={},simulation={seed: 3, n_train: 100}"))
    assert cfg.simulation.seed == 3 and cfg.simulation.n_train == 100


def test_an_unbalanced_value_is_one_config_error():
    with pytest.raises(ConfigError, match=r"override 'inference.poi_bounds=\[0': the value is not valid YAML"):
        load_config("default", ["inference.poi_bounds=[0"])


def test_the_task_parameter_splits_like_split_overrides():
    from workflows.tasks import SimulateObserved

    param = SimulateObserved.set
    assert param.parse("inference.poi_bounds=[0,0.9],training.max_epochs=2") == (
        "inference.poi_bounds=[0,0.9]", "training.max_epochs=2")
    assert param.parse(param.serialize(("x={a: 1, b: 2}", "y=3"))) == ("x={a: 1, b: 2}", "y=3")
