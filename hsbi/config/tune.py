"""The ``tune:`` section: a hyper-parameter search (Ray Tune, ASHA) over dotted config keys.

A search dimension is written ``section.field: [distribution, ...]`` with the distribution one of
``loguniform low high``, ``uniform low high``, ``randint low high`` (both ends included) or
``choice [option, ...]``, e.g.::

    tune:
      space:
        training.learning_rate: [loguniform, 1e-4, 1e-2]
        estimator.widths: [choice, [[32, 32], [64, 64]]]

Only fields of the ``estimator`` and ``training`` sections can be searched (not the estimator
kind, nor the ensemble size, seeds and epochs, which the search itself sets). Every end of a
range and every option is validated as the section validates it.

This module imports nothing of ``hsbi.config`` at import time (``schema`` imports it), only
inside the functions.
"""

from __future__ import annotations

import dataclasses
import socket
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hsbi.exceptions import ConfigError

__all__ = ["DISTRIBUTIONS", "OBJECTIVES", "TuneConfig", "apply_tuned", "check_ray_address"]

#: objective name -> the reported metric it minimises
OBJECTIVES = {"closure": "closure_chi2_ndf", "wasserstein": "closure_wasserstein", "loss": "val_loss"}
#: distributions of a search dimension (the ranged ones take two ends)
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
TUNABLE_SECTIONS = ("estimator", "training")
#: set by the search itself (a trial is one member on one Ray worker, without a logger)
FIXED_KEYS = ("estimator.kind", "training.members", "training.seed", "training.max_epochs", "training.devices",
              "training.nodes", "training.strategy", "training.logger")


def _default_space() -> dict[str, Any]:
    return {"training.learning_rate": ("loguniform", 3e-4, 1e-2), "estimator.widths": ("choice", ((32, 32), (64, 64)))}


def _fail(key: str, value: object, expected: str) -> typing.NoReturn:
    raise ConfigError(f"config key '{key}' = {value!r}: expected {expected}")


def _section_field(key: str) -> tuple[str, dataclasses.Field]:
    """The section and dataclass field named by a dotted search key, e.g. training.batch_size."""
    from hsbi.config.schema import AnalysisConfig

    section, _, name = key.partition(".")
    sections = {f.name: f for f in dataclasses.fields(AnalysisConfig)}
    fields = {}
    if section in TUNABLE_SECTIONS:
        fields = {f.name: f for f in dataclasses.fields(sections[section].default_factory)}
    if name not in fields or key in FIXED_KEYS:
        known = [f"{s}.{f.name}" for s in TUNABLE_SECTIONS
                 for f in dataclasses.fields(sections[s].default_factory) if f"{s}.{f.name}" not in FIXED_KEYS]
        raise ConfigError(f"unknown search key 'tune.space.{key}'; searchable keys: {', '.join(known)}")
    return section, fields[name]


def _checked_value(key: str, raw: object) -> Any:
    """``raw`` converted to the type of config field ``key`` and validated by its section."""
    from hsbi.config import schema
    from hsbi.config.loader import _convert

    section, fld = _section_field(key)
    cls = {f.name: f for f in dataclasses.fields(schema.AnalysisConfig)}[section].default_factory
    value = _convert(typing.get_type_hints(cls)[fld.name], raw, f"tune.space.{key}")
    try:
        dataclasses.replace(cls(), **{fld.name: value})
    except ConfigError as err:
        raise ConfigError(str(err).replace(f"'{key}'", f"'tune.space.{key}'", 1)) from None
    return value


def _dimension(key: str, spec: object) -> tuple[Any, ...]:
    """A validated search dimension: ``(distribution, low, high)`` or ``("choice", options)``."""
    where = f"tune.space.{key}"
    if not isinstance(spec, (list, tuple)) or not spec or spec[0] not in DISTRIBUTIONS:
        _fail(where, spec, f"[distribution, ...] with distribution one of {', '.join(DISTRIBUTIONS)}")
    kind, *args = spec
    if kind == "choice":
        if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
            _fail(where, spec, "[choice, [option, ...]] with at least one option")
        return ("choice", tuple(_checked_value(key, v) for v in args[0]))
    if len(args) != 2:
        _fail(where, spec, f"[{kind}, low, high]")
    low, high = (_checked_value(key, v) for v in args)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or low >= high or (kind == "loguniform" and low <= 0):
        _fail(where, spec, f"[{kind}, low, high] with numbers low < high" + (", low > 0" if kind == "loguniform" else ""))
    if kind == "randint" and not all(isinstance(v, int) for v in (low, high)):
        _fail(where, spec, "[randint, low, high] with integers (an integer config key)")
    return (kind, low, high)


@dataclass(frozen=True)
class TuneConfig:
    """Settings of ``TuneHyperparameters`` (none of them changes an estimator unless ``apply``)."""

    apply: bool = False  # TrainEstimator trains with the best trial's values (requires the search)
    trials: int = 8  # configurations drawn from the space
    samples: int = 0  # training events per class and process in each trial; 0: all
    max_epochs: int = 8  # epochs of each per-process classifier of a trial
    grace_period: int = 2  # ASHA: epochs (counted over a member's classifiers) before a stop
    reduction_factor: int = 2  # ASHA: 1 / fraction of trials promoted at each rung
    objective: str = "closure"  # closure (mean chi2/ndf), wasserstein, or loss (validation)
    seed: int = 0  # draws from the space, and the seed of every trial's training
    max_concurrent: int = 2  # trials running at once
    cpus_per_trial: int = 1
    space: dict[str, Any] = field(default_factory=_default_space)

    def __post_init__(self) -> None:
        checks = (
            (self.trials >= 1, "tune.trials", self.trials, "an integer >= 1"),
            (self.samples >= 0, "tune.samples", self.samples, "an integer >= 0 (0: all events)"),
            (self.max_epochs >= 1, "tune.max_epochs", self.max_epochs, "an integer >= 1"),
            (self.grace_period >= 1, "tune.grace_period", self.grace_period, "an integer >= 1"),
            (self.reduction_factor >= 2, "tune.reduction_factor", self.reduction_factor, "an integer >= 2"),
            (self.objective in OBJECTIVES, "tune.objective", self.objective, f"one of {', '.join(OBJECTIVES)}"),
            (self.max_concurrent >= 1, "tune.max_concurrent", self.max_concurrent, "an integer >= 1"),
            (self.cpus_per_trial >= 1, "tune.cpus_per_trial", self.cpus_per_trial, "an integer >= 1"),
            (isinstance(self.space, Mapping) and len(self.space) > 0, "tune.space", self.space,
             "a mapping of at least one dotted config key to [distribution, ...]"),
        )
        for ok, key, value, expected in checks:
            if not ok:
                _fail(key, value, expected)
        object.__setattr__(self, "space", {str(k): _dimension(str(k), v) for k, v in self.space.items()})


def apply_tuned(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """``cfg`` (an ``AnalysisConfig``) with dotted ``overrides`` (``{"training.learning_rate":
    1e-3}``, e.g. a search's best values read back from JSON) applied and validated."""
    values: dict[str, dict[str, Any]] = {}
    for key, raw in overrides.items():
        section, fld = _section_field(key)
        values.setdefault(section, {})[fld.name] = _checked_value(key, raw)
    return dataclasses.replace(
        cfg, **{s: dataclasses.replace(getattr(cfg, s), **v) for s, v in values.items()}
    )


def check_ray_address(address: str | None) -> None:
    """Raise :class:`ConfigError` unless ``address`` (``host:port`` of a Ray head, optionally
    ``ray://``; ``auto``; ``None`` for a local Ray) answers within 5 s: Ray itself would wait
    for minutes."""
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected host:port of a running Ray head "
                          "(`ray start --head` prints it), 'auto', or nothing for a local Ray")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(f"--ray-address {address!r}: no Ray cluster answers there ({err.strerror or err}); "
                          "start one with `ray start --head`, or leave --ray-address out for a local Ray") from None
