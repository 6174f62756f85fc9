"""Code edits reach the addresses of exactly the tasks whose artifacts they can change: the task's
module, the config layer, the stage's modules and what they import (and the model's code)."""

import json
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, law_env

pytestmark = pytest.mark.slow

#: the default DAG's addresses (test_addresses.addresses), computed from the edited copy
_PRINT_ADDRESSES = f"""
import json, sys
sys.path.append({str(ROOT / "tests" / "workflows")!r})
from test_addresses import addresses
print(json.dumps(addresses()))
"""

#: (file, old text, new text): each a logic edit that changes results, or a comment-only edit
EDITS = {
    "observed-run": ("workflows/tasks.py", 'np.savez(out / "observed.npz", x=data.x,',
                     'np.savez(out / "observed.npz", x=data.x[::2],'),
    "model-build": ("hsbi/config/schema.py", "kwargs = {**self.parameters,",
                    "kwargs = {**{k: 2 * v for k, v in self.parameters.items()},"),
    "trainers": ("hsbi/training/__init__.py", '"lre": train_lre_member, "dle": train_dle_member',
                 '"lre": train_dle_member, "dle": train_lre_member'),
    "model-code": ("hsbi/models/gaussian_rotation.py", "import numpy as np",
                   "import numpy as np\nnp = np  # an edit of the model's module"),
    "npe-comment": ("hsbi/estimators/npe.py", "import torch",
                    "# a comment\nimport torch  # another comment"),
    "npe-docstring": ("hsbi/estimators/npe.py", '"""', '"""An edited docstring. '),
}


def _addresses(tmp_path, name: str | None) -> dict:
    tree = tmp_path / (name or "base")
    for package in ("hsbi", "workflows"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    if name is not None:
        file, old, new = EDITS[name]
        text = (tree / file).read_text()
        assert old in text, f"{file} no longer contains {old!r}: update the test"
        (tree / file).write_text(text.replace(old, new, 1))
    env = {**law_env(tmp_path / "store"), "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", _PRINT_ADDRESSES], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return _addresses(tmp_path_factory.mktemp("code"), None)


def _changed(base: dict, new: dict) -> set:
    return {k for k in base if new[k] != base[k]}


@pytest.mark.parametrize(
    "edit, changed",
    [
        ("observed-run", {"SimulateObserved", "NeymanToys", "ConfidenceBelt", "InferProfileLikelihood"}),
        ("model-build", {"SimulateSamples", "SimulateObserved", "TrainEstimator", "NeymanToys", "ConfidenceBelt",
                         "InferProfileLikelihood"}),
        ("trainers", {"TrainEstimator", "NeymanToys", "ConfidenceBelt", "InferProfileLikelihood"}),
        ("model-code", {"SimulateSamples", "SimulateObserved", "TrainEstimator", "NeymanToys", "ConfidenceBelt",
                        "InferProfileLikelihood"}),
        ("npe-comment", set()),
        ("npe-docstring", set()),
    ],
)
def test_a_code_edit_changes_the_addresses_it_must(tmp_path, base, edit, changed):
    assert _changed(base, _addresses(tmp_path, edit)) == changed
