"""Bad input on the command line: one line naming the key or file, and a non-zero exit."""

import pytest

from helpers import ROOT


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
