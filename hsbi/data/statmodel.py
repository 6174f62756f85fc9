"""Ingested samples for the declared model: per process its nominal events, variations, yields
and the observed data, checked against the model (event counts of aligned variations, data
events)."""

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

__all__ = ["Events", "SampleStore", "network_inputs", "ratio_tasks"]

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
        """The observed data of a channel: every split of its data sample (not empty)."""
        data = Events.concat([self.read(channel.data, s, channel.features) for s in SPLITS])
        if len(data.w) == 0:
            raise DataError(f"statmodel channel {channel.name!r}: the data sample {channel.data!r} has no events; "
                            "expected observed events (or data: asimov / toy)")
        return data

    def yields(self) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str, str], tuple[float, float]]]:
        """The model's numbers from the samples' weights (all splits), as
        :func:`hsbi.inference.statmodel.compile_model` takes them: nominal yields by
        ``(channel, process)`` and normplusshape yield ratios ``(down, up)`` by ``(channel,
        process, np)``; event-aligned variations are checked to hold the nominal's events."""
        nominal, ratios = {}, {}
        for c, ch in enumerate(self.cfg.statmodel.channels):
            for p, proc in enumerate(ch.processes):
                for mod in (None, *proc.modifiers):
                    names = proc.samples if mod is None else (*mod.down, *mod.up)
                    for name in names:  # signed (NLO) weights are fine; a sample of negative ones is not
                        self.check_weights(name, ch.features)
                nom = nominal[(ch.name, proc.name)] = self.process(ch, proc, None).total
                for m, mod in enumerate(proc.modifiers):
                    if mod.type != "normplusshape":
                        continue
                    self.check_alignment(proc, mod, f"statmodel.channels[{c}].processes[{p}].modifiers[{m}]")
                    down, up = (self.variation(ch, proc, mod, side, None).total for side in ("down", "up"))
                    ratios[(ch.name, proc.name, mod.name)] = (down / nom if nom else 1.0, up / nom if nom else 1.0)
        return nominal, ratios

    def check_weights(self, sample: str, features: Sequence[str]) -> None:
        """A sample's events (all splits) must not all have negative weights: signed weights are
        valid where some are positive, a sample of only negative ones is a sign error (a sample
        of zero weights is the process's yield check's to report)."""
        w = np.concatenate([self.read(sample, sp, features).w for sp in SPLITS])
        if len(w) and (w < 0).all():
            raise DataError(f"statmodel sample {sample!r}: all {len(w)} event weights are negative (sum "
                            f"{w.sum():g}); expected a sample with positive weights (negative ones among them are "
                            "fine, e.g. NLO events)")

    def check_alignment(self, proc: ProcessConfig, mod: ModifierConfig, key: str) -> None:
        """Event-aligned variations (config ``key`` of ``mod``) hold the nominal's events: as many
        in every split (their event_key and split are the nominal's: checked by the config)."""
        if not (mod.up and mod.aligned):
            return
        for side in ("up", "down"):
            for nominal, varied in zip(proc.samples, getattr(mod, side)):
                for split in SPLITS:
                    n_nom, n_var = (ShardSet(self.dirs[s], split).rows for s in (nominal, varied))
                    if n_nom != n_var:
                        raise DataError(
                            f"config key '{key}.{side}' = {varied!r}: expected the events of the nominal "
                            f"{nominal!r} (aligned: true), or aligned: false; the {split} split has {n_var} "
                            f"events, the nominal's {n_nom} (events missing or extra)")


def network_inputs(cfg: AnalysisConfig, net: dict[str, str]) -> dict:
    """What of the model one network (from :func:`ratio_tasks`) learns from: the channel's
    features and, for a nominal ratio, every process's samples (its reference mixture); for a
    shape ratio, the process's samples and the modifier's variation (samples or weight columns).
    A network's address hashes this, not the whole model: a normsys edit, a new NP or another
    process's variation leaves it in place."""
    ch = next(c for c in cfg.statmodel.channels if c.name == net["channel"])
    proc = next(p for p in ch.processes if p.name == net["process"])
    if not net["np"]:
        return {"features": list(ch.features), "processes": {p.name: list(p.samples) for p in ch.processes}}
    mod = next(m for m in proc.modifiers if m.name == net["np"] and m.type == "normplusshape")
    side = net["side"]
    variation = ({"weight": mod.weight_up if side == "up" else mod.weight_down} if mod.weight_up
                 else {"samples": list(mod.up if side == "up" else mod.down)})
    return {"features": list(ch.features), "nominal": list(proc.samples), "variation": variation}


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
