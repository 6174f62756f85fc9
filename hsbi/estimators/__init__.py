"""Neural estimators (networks and ensembles) with a common ``log_components`` interface."""

import json
from collections.abc import Sequence
from pathlib import Path

from hsbi.estimators.combine import (
    Combination,
    CombinedEnsemble,
    fit_combination,
    load_combined,
    save_combination,
)
from hsbi.estimators.dle import DLEEnsemble, FlowNet, load_dle_members, save_dle_member
from hsbi.estimators.lre import LREEnsemble, RatioNet, load_members, save_member

__all__ = [
    "Combination",
    "CombinedEnsemble",
    "DLEEnsemble",
    "FlowNet",
    "LREEnsemble",
    "RatioNet",
    "fit_combination",
    "load_combined",
    "load_dle_members",
    "load_ensemble",
    "load_members",
    "save_combination",
    "save_dle_member",
    "save_member",
]


def load_ensemble(paths: Sequence[Path]) -> "LREEnsemble | DLEEnsemble":
    """An ensemble of the kind recorded in the members' ``estimator.json`` (lre or dle)."""
    kinds = {json.loads((Path(p) / "estimator.json").read_text())["kind"] for p in paths}
    if len(kinds) != 1:
        raise ValueError(f"ensemble members of different kinds: {sorted(kinds)}")
    return load_dle_members(paths) if kinds == {"dle"} else load_members(paths)
