"""Ingested events for data-driven models (``model.needs_events``): shards -> the model's splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hsbi.data.ingest.split import SPLITS
from hsbi.data.ingest.tensors import ShardSet
from hsbi.exceptions import DataError
from hsbi.models.base import MixtureModel

__all__ = ["attach_events", "read_split"]


def read_split(dirs: Sequence[str | Path], split: str, columns: Sequence[str]) -> tuple[np.ndarray, ...]:
    """``(columns (n, k) float64, raw weights (n,), labels (n,))`` of one split of the ingested
    groups in ``dirs`` (weights without the samples' normalisation: within-process sampling
    probabilities need only their ratios)."""
    shards = ShardSet(dirs, split, features=list(columns), normalise=False)
    x, w, y = (t.numpy() for t in shards.tensors())
    if len(x) == 0:
        raise DataError(f"the ingested samples have no events in the {split!r} split; expected a "
                        "non-zero fraction in the samples' split (train, validation, test)")
    return x.astype(np.float64), w.astype(np.float64), y


def attach_events(model: MixtureModel, dirs: Sequence[str | Path], split: str = "train") -> MixtureModel:
    """``model`` holding the events of every split of the ingested groups ``dirs``, sampling
    ``split``; a model that needs no events is returned as it is."""
    if not model.needs_events:
        return model
    if not dirs:
        raise DataError(f"model {type(model).__name__} samples ingested events: the config needs a "
                        f"'samples' list with the columns {', '.join(model.columns)}")
    return model.with_events({s: read_split(dirs, s, model.columns) for s in SPLITS}).for_split(split)
