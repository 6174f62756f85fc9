"""The declared statistical model (config section ``statmodel``), named as in pyhf and HS3.

Channels hold processes; a process is one or more ingested samples with modifiers:

- ``normfactor``: a free multiplicative parameter (the POI and free normalisations);
- ``normsys``: a yield factor interpolated with code 4 between ``lo`` and ``hi`` (kappas);
- ``normplusshape``: yield and per-event shape from up/down variation samples (``up``,
  ``down``: sample names, event-aligned through the event key unless ``aligned: false``) or
  from up/down weight columns of the nominal samples (``weight_up``, ``weight_down``);
- ``lumi``: the luminosity parameter (Gaussian constraint of width ``sigma`` around 1).

Parameters get bounds, inits and (NPs) unit Gaussian constraints with global observables;
``truth`` is where Asimov or toy data and coverage toys are thrown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hsbi.config.samples import SampleConfig
from hsbi.exceptions import ConfigError

__all__ = [
    "CONSTRAINED",
    "MODIFIER_TYPES",
    "ChannelConfig",
    "ModifierConfig",
    "ParameterConfig",
    "ProcessConfig",
    "StatModelConfig",
]

MODIFIER_TYPES = ("normfactor", "normsys", "normplusshape", "lumi")
#: modifier types whose parameter has a constraint term (an auxiliary measurement)
CONSTRAINED = ("normsys", "normplusshape", "lumi")
#: special values of ``channel.data``: expected data at the truth, or one toy at the truth
GENERATED_DATA = ("asimov", "toy")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' = {value!r}: expected {expected}")


def _names(value: tuple[str, ...] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class ModifierConfig:
    """One modifier of a process; ``name`` is its parameter (shared across processes)."""

    name: str
    type: str
    lo: float = 0.0  # normsys: kappa at alpha = -1
    hi: float = 0.0  # normsys: kappa at alpha = +1
    up: tuple[str, ...] = ()  # normplusshape: variation samples (one per nominal sample)
    down: tuple[str, ...] = ()
    weight_up: str = ""  # normplusshape: weight columns of the nominal samples
    weight_down: str = ""
    aligned: bool = True  # normplusshape samples: same events as the nominal (event key)

    def check(self, key: str, n_samples: int) -> None:
        _require(bool(_NAME_RE.match(self.name)), f"{key}.name", self.name, "an identifier")
        _require(self.type in MODIFIER_TYPES, f"{key}.type", self.type, f"one of {MODIFIER_TYPES}")
        if self.type == "normsys":
            for side in ("lo", "hi"):
                _require(getattr(self, side) > 0, f"{key}.{side}", getattr(self, side),
                         "a kappa > 0 (the yield factor at alpha = -1 / +1)")
        if self.type == "normplusshape":
            by_samples, by_weights = bool(self.up or self.down), bool(self.weight_up or self.weight_down)
            _require(by_samples != by_weights, key, self.name,
                     "either up/down variation samples or weight_up/weight_down columns")
            if by_samples:
                for side in ("up", "down"):
                    _require(len(getattr(self, side)) == n_samples, f"{key}.{side}",
                             list(getattr(self, side)),
                             f"{n_samples} sample name(s), one per sample of the process")
            else:
                _require(bool(self.weight_up and self.weight_down), key, self.name,
                         "both weight_up and weight_down")

    @property
    def variation_samples(self) -> tuple[str, ...]:
        return (*self.up, *self.down)


@dataclass(frozen=True)
class ProcessConfig:
    name: str
    samples: tuple[str, ...] = ()
    modifiers: tuple[ModifierConfig, ...] = ()

    def check(self, key: str) -> None:
        _require(bool(_NAME_RE.match(self.name)), f"{key}.name", self.name, "an identifier")
        _require(len(self.samples) > 0, f"{key}.samples", list(self.samples),
                 "a non-empty list of ingested sample names")
        seen: set[tuple[str, str]] = set()
        for i, mod in enumerate(self.modifiers):
            mod.check(f"{key}.modifiers[{i}]", len(self.samples))
            _require((mod.name, mod.type) not in seen, f"{key}.modifiers[{i}]", mod.name,
                     "each modifier once per process")
            seen.add((mod.name, mod.type))


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    features: tuple[str, ...] = ()
    data: str = "asimov"
    processes: tuple[ProcessConfig, ...] = ()

    def check(self, key: str) -> None:
        _require(bool(_NAME_RE.match(self.name)), f"{key}.name", self.name, "an identifier")
        _require(len(self.features) > 0, f"{key}.features", list(self.features),
                 "a non-empty list of feature columns")
        _require(len(self.processes) > 0, f"{key}.processes", [], "at least one process")
        names = [p.name for p in self.processes]
        _require(len(set(names)) == len(names), f"{key}.processes", names, "unique process names")
        for i, proc in enumerate(self.processes):
            proc.check(f"{key}.processes[{i}]")


@dataclass(frozen=True)
class ParameterConfig:
    """Bounds and init of a parameter; ``sigma``: the lumi constraint's width; ``fixed``: held
    at ``init``."""

    name: str
    bounds: tuple[float, float] | None = None
    init: float | None = None
    sigma: float | None = None
    fixed: bool = False


@dataclass(frozen=True)
class StatModelConfig:
    poi: str = ""
    channels: tuple[ChannelConfig, ...] = ()
    parameters: tuple[ParameterConfig, ...] = ()
    truth: dict[str, float] = field(default_factory=dict)
    #: nominal events per process used to renormalise the product of shape factors
    normalisation_events: int = 20000

    @property
    def declared(self) -> bool:
        return bool(self.channels)

    def __post_init__(self) -> None:
        if not self.declared:
            _require(not self.poi, "statmodel.channels", [], "at least one channel (statmodel.poi is set)")
            return
        names = [c.name for c in self.channels]
        _require(len(set(names)) == len(names), "statmodel.channels", names, "unique channel names")
        for i, channel in enumerate(self.channels):
            channel.check(f"statmodel.channels[{i}]")
        _require(self.normalisation_events >= 100, "statmodel.normalisation_events",
                 self.normalisation_events, "an integer >= 100")
        kinds = self.parameter_kinds()
        _require(self.poi in kinds and kinds[self.poi] == "normfactor", "statmodel.poi", self.poi,
                 f"the name of a normfactor modifier: one of {sorted(k for k, t in kinds.items() if t == 'normfactor')}")
        self._check_parameters(kinds)

    def parameter_kinds(self) -> dict[str, str]:
        """Parameter name -> the type of its modifiers (one type per parameter; normsys and
        normplusshape may share a parameter, both are constrained NPs)."""
        kinds: dict[str, str] = {}
        for c, channel in enumerate(self.channels):
            for p, proc in enumerate(channel.processes):
                for m, mod in enumerate(proc.modifiers):
                    kind = "alpha" if mod.type in ("normsys", "normplusshape") else mod.type
                    seen = kinds.setdefault(mod.name, kind)
                    _require(seen == kind, f"statmodel.channels[{c}].processes[{p}].modifiers[{m}].type",
                             mod.type, f"the type of the other modifiers named {mod.name!r}")
        return kinds

    def _check_parameters(self, kinds: dict[str, str]) -> None:
        seen: set[str] = set()
        for i, par in enumerate(self.parameters):
            key = f"statmodel.parameters[{i}]"
            _require(par.name in kinds, f"{key}.name", par.name,
                     f"a parameter of a modifier: one of {sorted(kinds)}")
            _require(par.name not in seen, f"{key}.name", par.name, "each parameter once")
            seen.add(par.name)
            if par.bounds is not None:
                _require(len(par.bounds) == 2 and par.bounds[0] < par.bounds[1], f"{key}.bounds",
                         list(par.bounds), "[low, high] with low < high")
            if par.sigma is not None:
                _require(kinds[par.name] == "lumi", f"{key}.sigma", par.sigma,
                         "no sigma: a normfactor (the POI or a free normalisation) is unconstrained "
                         "and NPs have unit Gaussian constraints; only lumi takes a width")
                _require(par.sigma > 0, f"{key}.sigma", par.sigma, "a positive width")
            if par.name == self.poi:
                _require(not par.fixed, f"{key}.fixed", par.fixed, "false: the POI is fitted")
        for name, value in self.truth.items():
            _require(name in kinds, f"statmodel.truth.{name}", value,
                     f"a parameter of the model: one of {sorted(kinds)}")

    def sample_names(self, data: bool = True) -> set[str]:
        """Every ingested sample the model names (nominal, variations and, with ``data``, the
        observed data)."""
        out: set[str] = set()
        for channel in self.channels:
            if data and channel.data not in GENERATED_DATA:
                out.add(channel.data)
            for proc in channel.processes:
                out.update(proc.samples)
                for mod in proc.modifiers:
                    out.update(mod.variation_samples)
        return out

    def check_samples(self, samples: Mapping[str, SampleConfig]) -> None:
        """Every named sample is one of the ingested ``samples`` (by name) and stores what the
        model reads from it: the features of its channel (nominal, variations and data alike)
        and a weight variation's columns; an event-aligned variation splits its events like the
        nominal (same event_key and split)."""
        columns = {name: sample.columns for name, sample in samples.items()}
        for c, channel in enumerate(self.channels):
            key = f"statmodel.channels[{c}]"
            if channel.data not in GENERATED_DATA:
                _require(channel.data in columns, f"{key}.data", channel.data,
                         f"'asimov', 'toy' or an ingested sample: one of {sorted(columns)}")
                _require_sample(f"{key}.data", channel.data, columns, channel)
            for p, proc in enumerate(channel.processes):
                for name in proc.samples:
                    _require_sample(f"{key}.processes[{p}].samples", name, columns, channel)
                for m, mod in enumerate(proc.modifiers):
                    _check_modifier_samples(f"{key}.processes[{p}].modifiers[{m}]", mod, proc, channel, columns)
                    _check_aligned(f"{key}.processes[{p}].modifiers[{m}]", mod, proc, samples)


def _require_sample(key: str, sample: str, columns: Mapping[str, Sequence[str]], channel: ChannelConfig) -> None:
    """``sample`` is ingested and stores the features of ``channel``."""
    _require(sample in columns, key, sample, f"an ingested sample (samples section): one of {sorted(columns)}")
    missing = [f for f in channel.features if f not in columns[sample]]
    _require(not missing, key, sample, f"a sample storing the features {list(channel.features)} of channel "
             f"{channel.name!r}; it stores {list(columns[sample])}, without {missing}")


def _check_modifier_samples(key: str, mod: ModifierConfig, proc: ProcessConfig, channel: ChannelConfig,
                            columns: Mapping[str, Sequence[str]]) -> None:
    """The variation samples of ``mod`` are ingested and store the channel's features; weight
    columns are stored by every nominal sample of ``proc``."""
    for side in ("up", "down"):
        for name in getattr(mod, side):
            _require_sample(f"{key}.{side}", name, columns, channel)
    weights = [w for w in (mod.weight_up, mod.weight_down) if w]
    for name in proc.samples:
        missing = [w for w in weights if w not in columns[name]]
        _require(not missing, f"{key}.weight_up/weight_down", weights,
                 f"columns of the nominal sample {name!r}; it stores {list(columns[name])}, without {missing}")


def _check_aligned(key: str, mod: ModifierConfig, proc: ProcessConfig, samples: Mapping[str, SampleConfig]) -> None:
    """An event-aligned variation has the event key and split of its nominal sample (so both
    put each event in the same split); the ingested event counts are checked once ingested."""
    if not mod.aligned:
        return
    for side in ("up", "down"):
        for nominal, varied in zip(proc.samples, getattr(mod, side)):
            a, b = samples[nominal], samples[varied]
            _require(bool(a.event_key) and (a.event_key, a.split) == (b.event_key, b.split), f"{key}.{side}", varied,
                     f"a sample with the event_key and split of the nominal {nominal!r} (event-aligned: "
                     f"aligned: true), a non-empty event_key; it has {list(b.event_key)} and {b.split}, the "
                     f"nominal {list(a.event_key)} and {a.split}; or aligned: false")
