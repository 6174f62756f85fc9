"""Ingested samples for the declared model: per process its nominal events, variations, yields
and the observed data, checked against the model (schema, event alignment, non-empty yields)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsbi.config.schema import AnalysisConfig
from hsbi.config.statmodel import ChannelConfig, ModifierConfig, ProcessConfig
from hsbi.data.ingest.split import SPLITS
from hsbi.data.ingest.tensors import ShardSet
from hsbi.exceptions import DataError

__all__ = ["Events", "SampleStore", "ratio_tasks"]

Dirs = Mapping[str, Sequence[str | Path]]


@dataclass(frozen=True)
class Events:
    """Features ``x`` (n, D) float32 and normalised weights ``w`` (n,) float64."""

    x: np.ndarray
    w: np.ndarray

    @staticmethod
    def concat(parts: Sequence[Events]) -> Events:
        return Events(np.concatenate([p.x for p in parts]), np.concatenate([p.w for p in parts]))

    @property
    def total(self) -> float:
        return float(self.w.sum())


class SampleStore:
    """Reads the samples of ``cfg.statmodel`` from the ingested groups ``dirs`` (sample name ->
    artifact directories)."""

    def __init__(self, cfg: AnalysisConfig, dirs: Dirs) -> None:
        self.cfg, self.dirs = cfg, dirs
        self.samples = {s.name: s for s in cfg.samples}

    def _shards(self, sample: str, split: str, columns: Sequence[str]) -> ShardSet:
        if sample not in self.dirs:
            raise DataError(f"sample {sample!r} was not ingested; expected it in the samples section")
        return ShardSet(self.dirs[sample], split, features=list(columns))

    def read(self, sample: str, split: str, features: Sequence[str], weight: str = "") -> Events:
        """One split of one sample (``weight``: a stored column to use as the event weight,
        normalised like the nominal weight)."""
        columns = [*features, weight] if weight else list(features)
        try:
            shards = self._shards(sample, split, columns)
            x, w, _ = (t.numpy() for t in shards.tensors())
        except DataError as err:
            raise DataError(f"statmodel sample {sample!r}: {err}") from None
        if weight:
            factor = shards.factors[0] if shards.factors else 1.0
            return Events(np.ascontiguousarray(x[:, :-1]), x[:, -1].astype(np.float64) * factor)
        return Events(x, w.astype(np.float64))

    def process(self, channel: ChannelConfig, proc: ProcessConfig, split: str | None) -> Events:
        """The nominal events of ``proc`` in ``split`` (None: every split)."""
        splits = SPLITS if split is None else (split,)
        return Events.concat([self.read(s, sp, channel.features) for sp in splits for s in proc.samples])

    def variation(self, channel: ChannelConfig, proc: ProcessConfig, mod: ModifierConfig, side: str,
                  split: str | None) -> Events:
        """The up or down variation of ``proc`` for ``mod`` in ``split`` (None: every split):
        its samples, or the nominal events with the weight column."""
        splits = SPLITS if split is None else (split,)
        if mod.weight_up:
            column = mod.weight_up if side == "up" else mod.weight_down
            return Events.concat([self.read(s, sp, channel.features, column) for sp in splits for s in proc.samples])
        names = mod.up if side == "up" else mod.down
        return Events.concat([self.read(s, sp, channel.features) for sp in splits for s in names])

    def data(self, channel: ChannelConfig) -> Events:
        """The observed data of a channel: every split of its data sample."""
        return Events.concat([self.read(channel.data, s, channel.features) for s in SPLITS])

    def check_alignment(self, proc: ProcessConfig, mod: ModifierConfig) -> None:
        """Event-aligned variations hold the same events as the nominal: same event key and
        split definition, and the same number of events in every split."""
        if not (mod.up and mod.aligned):
            return
        for nominal, varied in zip((*proc.samples, *proc.samples), (*mod.up, *mod.down)):
            a, b = self.samples[nominal], self.samples[varied]
            if not a.event_key or a.event_key != b.event_key or a.split != b.split:
                raise DataError(
                    f"statmodel modifier {mod.name!r}: variation sample {varied!r} is event-aligned "
                    f"(aligned: true) but its event_key/split differ from {nominal!r}'s or are empty "
                    f"({list(b.event_key)} vs {list(a.event_key)}); expected the same event_key and split, "
                    "or aligned: false")
            for split in SPLITS:
                n_nom = ShardSet(self.dirs[nominal], split).rows
                n_var = ShardSet(self.dirs[varied], split).rows
                if n_nom != n_var:
                    raise DataError(
                        f"statmodel modifier {mod.name!r}: variation sample {varied!r} has {n_var} events "
                        f"in the {split} split, the nominal {nominal!r} {n_nom}: an event-aligned variation "
                        "needs the same events (missing or extra events); expected equal counts, or aligned: false")


def ratio_tasks(cfg: AnalysisConfig) -> list[dict[str, str]]:
    """The networks the model needs: ``{"channel", "process", "np", "side"}`` per nominal ratio
    (np = side = "") and per (process, normplusshape NP, direction)."""
    out = []
    for ch in cfg.statmodel.channels:
        for proc in ch.processes:
            out.append({"channel": ch.name, "process": proc.name, "np": "", "side": ""})
            for mod in proc.modifiers:
                if mod.type == "normplusshape":
                    out += [{"channel": ch.name, "process": proc.name, "np": mod.name, "side": side}
                            for side in ("up", "down")]
    return out
