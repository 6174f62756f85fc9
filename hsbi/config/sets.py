"""The ``sets`` section: hierarchy-aware set estimators (simulation, estimator, training,
inference) for the hierarchical set models of ``hsbi.models.bump_hunt``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hsbi.config.device import check_device_keys
from hsbi.exceptions import ConfigError
from hsbi.models.bump_hunt import SET_MODELS, SetModel

__all__ = ["SET_ENCODERS", "SET_ESTIMATORS", "SetNeymanConfig", "SetTrainingConfig", "SetsConfig",
           "check_estimator_kind"]

SET_ESTIMATORS = ("npe", "ratio")
SET_ENCODERS = ("deepset", "transformer")


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key 'sets.{key}' = {value!r}: expected {expected}")


@dataclass(frozen=True)
class SetTrainingConfig:
    """Training of a set estimator (the fields :func:`hsbi.training.fit.make_trainer` and
    ``EstimatorModule`` read, as in ``training``); ``batch_size`` counts sets. ``threads``: on
    a shared machine 1 thread can be ~10x faster than 2 contending ones (measured here)."""

    seed: int = 100
    max_epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    devices: int = 1
    nodes: int = 1
    strategy: str = "auto"
    logger: str = "none"
    threads: int = 0  # torch intra-op threads while training (0: torch's default)
    accelerator: str = "cpu"  # as training.accelerator, precision and gradient clipping
    precision: str = "32"
    gradient_clip_val: float = 0.0
    gradient_clip_algorithm: str = "norm"

    def __post_init__(self) -> None:
        check_device_keys(self, "sets.training")
        _require(self.threads >= 0, "training.threads", self.threads, "an integer >= 0 (0: torch's default)")
        for key in ("max_epochs", "batch_size", "devices", "nodes"):
            _require(getattr(self, key) >= 1, f"training.{key}", getattr(self, key), "an integer >= 1")
        _require(self.learning_rate > 0, "training.learning_rate", self.learning_rate, "a positive number")
        _require(self.weight_decay >= 0, "training.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.strategy in ("auto", "ddp", "ddp_spawn", "ddp_fork"), "training.strategy",
                 self.strategy, "one of auto, ddp, ddp_spawn, ddp_fork")
        _require(self.logger in ("csv", "tensorboard", "mlflow", "none"), "training.logger", self.logger,
                 "one of csv, tensorboard, mlflow, none")


@dataclass(frozen=True)
class SetNeymanConfig:
    """Neyman toys of the set-level profile likelihood: ``toys`` per POI grid point, in
    branches of ``chunk`` toys, thrown at the observed conditional MLE of the nuisance."""

    poi_min: float = 3.0
    poi_max: float = 9.0
    points: int = 7
    toys: int = 200
    chunk: int = 100
    seed: int = 13

    def __post_init__(self) -> None:
        _require(self.poi_min < self.poi_max, "neyman.poi_min/poi_max", (self.poi_min, self.poi_max),
                 "poi_min < poi_max")
        _require(self.points >= 2, "neyman.points", self.points, "an integer >= 2")
        _require(self.toys >= 10, "neyman.toys", self.toys, "an integer >= 10")
        _require(self.chunk >= 1, "neyman.chunk", self.chunk, "an integer >= 1 (toys per branch)")

    @property
    def grid(self) -> tuple[float, ...]:
        step = (self.poi_max - self.poi_min) / (self.points - 1)
        return tuple(round(self.poi_min + i * step, 12) for i in range(self.points))

    @property
    def chunks(self) -> tuple[int, ...]:
        full, rest = divmod(self.toys, self.chunk)
        return (self.chunk,) * full + ((rest,) if rest else ())


@dataclass(frozen=True)
class SetsConfig:
    """Set estimators over event ensembles (arXiv:2306.12584).

    ``model``: a set model (``bump_hunt`` or ``on_off``) with constructor ``parameters``;
    ``estimator``: ``npe`` (posterior of the POI, nuisance marginalised; ``encoder`` deepset or
    transformer) or ``ratio`` (set-level likelihood in (POI, nuisance), profiled);
    ``set_size``: sizes drawn uniformly per training set (models with a fixed size: bump_hunt);
    ``local_fraction``, ``pair_scale``: the ratio's parameter pairs (share drawn close together,
    their spread per parameter); ``truth``: (POI, nuisance) of the observed set.
    """

    model: str = "bump_hunt"
    parameters: dict[str, Any] = field(default_factory=dict)
    estimator: str = "npe"
    encoder: str = "deepset"
    widths: tuple[int, ...] = (64, 64)
    latent: int = 32
    summary: int = 32
    transforms: int = 3
    heads: int = 4
    blocks: int = 2
    n_train: int = 20000
    n_val: int = 2000
    chunk: int = 5000
    seed: int = 3
    set_size: tuple[int, int] = (10, 100)
    local_fraction: float = 0.5
    pair_scale: tuple[float, float] = (2.0, 0.2)
    training: SetTrainingConfig = field(default_factory=SetTrainingConfig)
    truth: tuple[float, float] = (0.3, 1.5)
    observed_seed: int = 5
    observed_size: int = 100
    levels: tuple[float, ...] = (0.6827, 0.95)
    stream_steps: int = 10
    sbc_sets: int = 200
    sbc_samples: int = 100
    scan_points: int = 61
    neyman: SetNeymanConfig = field(default_factory=SetNeymanConfig)

    def __post_init__(self) -> None:
        _require(self.model in SET_MODELS, "model", self.model, f"one of {sorted(SET_MODELS)}")
        _require(self.estimator in SET_ESTIMATORS, "estimator", self.estimator, f"one of {SET_ESTIMATORS}")
        _require(self.encoder in SET_ENCODERS, "encoder", self.encoder, f"one of {SET_ENCODERS}")
        _require(self.estimator == "npe" or self.encoder == "deepset", "encoder", self.encoder,
                 "'deepset' with sets.estimator: ratio (its theta-conditioned per-event sum is a deep set)")
        _require(len(self.widths) > 0 and all(w > 0 for w in self.widths), "widths", list(self.widths),
                 "a non-empty list of positive integers")
        for key in ("latent", "summary", "transforms", "heads", "blocks", "n_train", "n_val", "chunk",
                    "stream_steps", "sbc_sets", "sbc_samples"):
            _require(getattr(self, key) >= 1, key, getattr(self, key), "an integer >= 1")
        _require(self.scan_points >= 11, "scan_points", self.scan_points, "an integer >= 11")
        _require(len(self.set_size) == 2 and 1 <= self.set_size[0] <= self.set_size[1], "set_size",
                 list(self.set_size), "[low, high] with 1 <= low <= high")
        _require(0 <= self.local_fraction <= 1, "local_fraction", self.local_fraction, "a number in [0, 1]")
        _require(len(self.pair_scale) == 2 and min(self.pair_scale) > 0, "pair_scale",
                 list(self.pair_scale), "two positive widths (POI, nuisance)")
        _require(len(self.levels) > 0 and all(0 < cl < 1 for cl in self.levels), "levels",
                 list(self.levels), "confidence levels in (0, 1)")
        _require(1 <= self.observed_size <= self.set_size[1], "observed_size", self.observed_size,
                 f"an integer in [1, {self.set_size[1]}] (sets.set_size: the largest trained size)")
        model = self.build()
        _require(len(self.truth) == 2, "truth", list(self.truth), "[poi, nuisance]")
        for j, (name, (lo, hi)) in enumerate(((model.poi_name, model.poi_range),
                                              (model.nuisance_name, model.nuisance_range))):
            _require(lo <= self.truth[j] <= hi, "truth", list(self.truth),
                     f"{name} inside the prior's support [{lo:g}, {hi:g}]")
        lo, hi = model.poi_range
        inside = lo <= self.neyman.poi_min and self.neyman.poi_max <= hi
        _require(self.estimator != "ratio" or inside, "neyman.poi_min/poi_max",
                 (self.neyman.poi_min, self.neyman.poi_max), f"a grid inside [{lo:g}, {hi:g}]")

    def build(self) -> SetModel:
        """The set model with its ``parameters`` (a :class:`ConfigError` naming the key)."""
        cls = SET_MODELS[self.model]
        for key in self.parameters:
            _require(key in cls.parameters, f"parameters.{key}", self.parameters[key],
                     f"a parameter of set model '{self.model}': one of {list(cls.parameters)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.parameters.items()}
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config key 'sets.parameters' = {self.parameters!r}: {err}") from None


def check_estimator_kind(cfg: SetsConfig, kind: str, task: str) -> None:
    """:class:`ConfigError` when ``task`` needs ``sets.estimator: kind`` and the config differs."""
    other = {"npe": "InferPosterior", "ratio": "InferSetProfile"}[cfg.estimator]
    _require(cfg.estimator == kind, "estimator", cfg.estimator,
             f"'{kind}' for {task} (a '{cfg.estimator}' estimator goes with {other})")
