"""Run by the tests in a process of its own (pyhs3's pytensor pins numba <= 0.65.1, which the
project's environment does not hold: setup.sh installs pyhs3 with it into ``.venv/pyhs3``, put
first on this process's path): load an HS3 document with pyhs3 and print, as JSON, the
log-probability of its likelihood ``binned`` at the parameter points of a JSON file (none: load
only, and build nothing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyhs3
from pyhs3.compile import function
from pytensor.graph.traversal import graph_inputs

doc = json.loads(Path(sys.argv[1]).read_text())
ws = pyhs3.Workspace(**doc)
out: dict = {"distributions": [d.name for d in ws.distributions]}
if len(sys.argv) > 2:
    points = json.loads(Path(sys.argv[2]).read_text())
    model = ws.model("binned", progress=False)
    inputs = [v for v in graph_inputs([model.log_prob]) if getattr(v, "name", None) and not hasattr(v, "data")]
    f = function(inputs, model.log_prob, on_unused_input="ignore")
    values = [{**model.free_params, **p} for p in points]
    out["log_prob"] = [float(np.asarray(f(*(np.float64(v[i.name]) for i in inputs))).ravel()[0]) for v in values]
print(json.dumps(out))
