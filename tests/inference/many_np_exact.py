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


def exact_likelihood(sim: ManyNP, directory: Path, n_norm: int, data_params: Mapping[str, float]) -> tuple:
    """hsbi's likelihood built from the benchmark's exact densities and shape ratios at +-1
    (normalisation: ``n_norm`` events per process, seed 5), a dataset of the config's data
    sample (torch, as the workflows build it) and the data's features:
    ``(DeclaredLikelihood, Dataset, x)``."""
    import pyarrow.parquet as pq
    import torch

    from hsbi.inference.fitting import DeclaredLikelihood
    from hsbi.inference.statmodel import DTYPE, ChannelEvents, Dataset, Normalisation

    torch.set_num_threads(1)
    model, terms, path = exact_model(sim, directory, 500, data_params)
    ch = model.channels[0]
    rng = np.random.default_rng(5)
    ws, los, his = [], [], []
    for c, p in enumerate(ch.processes):
        _, lo, hi = terms(sim.sample(rng, p, n_norm))
        ws.append(np.ones(n_norm)), los.append(lo[:, c]), his.append(hi[:, c])
    off_lo, off_hi = Normalisation.offsets(ws, los, his)
    norm = Normalisation.of(ws, [a - o for a, o in zip(los, off_lo)], [a - o for a, o in zip(his, off_hi)])
    table = pq.read_table(path.parent / "data.parquet")
    x = np.stack([table.column(f).to_numpy() for f in sim.features], -1)
    logp, lo, hi = terms(x)
    data = Dataset((ChannelEvents.of(np.ones((1, len(x))), logp[None], lo[None], hi[None]),),
                   torch.as_tensor(model.nominal_aux[None], dtype=DTYPE))
    return DeclaredLikelihood(model, (norm,)), data, x
