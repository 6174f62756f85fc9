"""The many-NP benchmark's declared model with its exact per-event terms (no networks), shared
by the likelihood and toy tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from hsbi.config.loader import load_config
from hsbi.inference.statmodel import StatModel, compile_model
from hsbi.models.many_np import ManyNP


def exact_model(sim: ManyNP, directory: Path, n_mc: int, data_params: Mapping[str, float]
                ) -> tuple[StatModel, Callable[[np.ndarray], tuple[np.ndarray, ...]], Path]:
    """The compiled model of the benchmark's config (yields and variation kappas exact), a maker
    of exact ``(logp, lo, hi)`` per event, and the config's path (samples of ``n_mc`` events)."""
    path = sim.write_samples(directory, seed=3, n_mc_per_process=n_mc, data_params=dict(data_params))
    sm = load_config(path).statmodel
    nominal = {("SR", p): sim.yields({})[p] for p in sim.processes}
    ratios = {("SR", proc.name, mod.name): tuple(sim.yields({mod.name: a})[proc.name] / nominal[("SR", proc.name)]
                                                 for a in (-1.0, 1.0))
              for proc in sm.channels[0].processes for mod in proc.modifiers if mod.type == "normplusshape"}
    model = compile_model(sm, nominal, ratios)
    ch = model.channels[0]
    names = tuple(model.names[j] for j in ch.shape_index)

    def terms(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return sim.ratio_terms(x, ch.processes, names, ch.shape_mask)

    return model, terms, path
