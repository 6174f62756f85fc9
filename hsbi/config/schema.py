"""Sections of the analysis config; each validates itself and names the offending key."""

from __future__ import annotations

from dataclasses import dataclass, field

from hsbi.config.samples import SampleConfig
from hsbi.exceptions import ConfigError
from hsbi.models import MODELS

__all__ = [
    "AnalysisConfig",
    "CoverageConfig",
    "EstimatorConfig",
    "InferenceConfig",
    "ModelConfig",
    "NeymanConfig",
    "SimulationConfig",
    "TrainingConfig",
    "Truth",
]

ESTIMATOR_KINDS = ("lre", "dle")
ACTIVATIONS = ("relu", "silu", "tanh", "elu")


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' = {value!r}: expected {expected}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "gaussian_rotation"
    radius: float = 2.0
    nuisance_reference: float = 0.7853981633974483

    def __post_init__(self) -> None:
        _require(self.name in MODELS, "model.name", self.name, f"one of {sorted(MODELS)}")
        _require(self.radius > 0, "model.radius", self.radius, "a positive number")

    def build(self):  # -> MixtureModel
        model = MODELS[self.name](radius=self.radius)
        lo, hi = model.nuisance_range
        _require(
            lo <= self.nuisance_reference <= hi,
            "model.nuisance_reference",
            self.nuisance_reference,
            f"a value inside the model's nuisance range [{lo:.4g}, {hi:.4g}]",
        )
        return model


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = 1
    n_train: int = 60000
    n_val: int = 15000

    def __post_init__(self) -> None:
        _require(self.n_train > 0, "simulation.n_train", self.n_train, "a positive integer")
        _require(self.n_val > 0, "simulation.n_val", self.n_val, "a positive integer")


@dataclass(frozen=True)
class EstimatorConfig:
    kind: str = "lre"
    widths: tuple[int, ...] = (64, 64)
    activation: str = "silu"
    transforms: int = 3  # dle: spline transforms of the flow


    def __post_init__(self) -> None:
        _require(self.kind in ESTIMATOR_KINDS, "estimator.kind", self.kind, f"one of {ESTIMATOR_KINDS}")
        _require(
            len(self.widths) > 0 and all(w > 0 for w in self.widths),
            "estimator.widths",
            list(self.widths),
            "a non-empty list of positive integers",
        )
        _require(
            self.activation in ACTIVATIONS, "estimator.activation", self.activation, f"one of {ACTIVATIONS}"
        )
        _require(self.transforms >= 1, "estimator.transforms", self.transforms, "an integer >= 1")


@dataclass(frozen=True)
class TrainingConfig:
    members: int = 3
    seed: int = 100
    max_epochs: int = 12
    batch_size: int = 1024
    learning_rate: float = 3e-3
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _require(self.members >= 1, "training.members", self.members, "an integer >= 1")
        _require(self.max_epochs >= 1, "training.max_epochs", self.max_epochs, "an integer >= 1")
        _require(self.batch_size >= 1, "training.batch_size", self.batch_size, "an integer >= 1")
        _require(
            self.learning_rate > 0, "training.learning_rate", self.learning_rate, "a positive number"
        )
        _require(
            self.weight_decay >= 0, "training.weight_decay", self.weight_decay, "a number >= 0"
        )


@dataclass(frozen=True)
class Truth:
    mu: float = 0.2
    nuisance: float = 0.7853981633974483

    def __post_init__(self) -> None:
        _require(
            0.0 <= self.mu <= 1.0, "inference.truth.mu", self.mu, "a signal fraction in [0, 1]"
        )


@dataclass(frozen=True)
class NeymanConfig:
    mu_min: float = 0.15
    mu_max: float = 0.25
    points: int = 11
    toys: int = 200
    seed: int = 11
    method: str = "simulator"  # or "pool": toys from per-process pools, batched Newton fits

    def __post_init__(self) -> None:
        _require(self.method in ("simulator", "pool"), "inference.neyman.method", self.method,
                 "'simulator' (fresh events per toy) or 'pool' (resampled pools, batched fits)")
        _require(
            0.0 <= self.mu_min < self.mu_max <= 1.0,
            "inference.neyman.mu_min/mu_max",
            (self.mu_min, self.mu_max),
            "0 <= mu_min < mu_max <= 1",
        )
        _require(self.points >= 2, "inference.neyman.points", self.points, "an integer >= 2")
        _require(self.toys >= 10, "inference.neyman.toys", self.toys, "an integer >= 10")

    @property
    def grid(self) -> tuple[float, ...]:
        step = (self.mu_max - self.mu_min) / (self.points - 1)
        return tuple(round(self.mu_min + i * step, 12) for i in range(self.points))


@dataclass(frozen=True)
class CoverageConfig:
    datasets: int = 1000
    seed: int = 23
    width_datasets: int = 40

    def __post_init__(self) -> None:
        _require(self.datasets >= 10, "inference.coverage.datasets", self.datasets, "an integer >= 10")
        _require(
            0 <= self.width_datasets <= self.datasets,
            "inference.coverage.width_datasets",
            self.width_datasets,
            "an integer between 0 and inference.coverage.datasets",
        )


@dataclass(frozen=True)
class InferenceConfig:
    poi: str = "mu"
    truth: Truth = field(default_factory=Truth)
    n_expected: float = 1000.0
    constraint_sigma: float = 0.1
    observed_seed: int = 7
    levels: tuple[float, ...] = (0.6827, 0.95)
    scan_points: int = 121
    neyman: NeymanConfig = field(default_factory=NeymanConfig)
    coverage: CoverageConfig = field(default_factory=CoverageConfig)

    def __post_init__(self) -> None:
        _require(self.poi == "mu", "inference.poi", self.poi, "'mu' (the signal fraction)")
        _require(self.n_expected > 0, "inference.n_expected", self.n_expected, "a positive number")
        _require(
            self.constraint_sigma > 0,
            "inference.constraint_sigma",
            self.constraint_sigma,
            "a positive width of the nuisance's auxiliary measurement",
        )
        _require(
            len(self.levels) > 0 and all(0 < cl < 1 for cl in self.levels),
            "inference.levels",
            list(self.levels),
            "confidence levels in (0, 1)",
        )
        _require(self.scan_points >= 11, "inference.scan_points", self.scan_points, "an integer >= 11")


@dataclass(frozen=True)
class AnalysisConfig:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    samples: tuple[SampleConfig, ...] = ()

    def __post_init__(self) -> None:
        names = [s.name for s in self.samples]
        _require(len(set(names)) == len(names), "samples", names, "unique sample names")
        model = self.model.build()
        lo, hi = model.nuisance_range
        _require(
            lo <= self.inference.truth.nuisance <= hi,
            "inference.truth.nuisance",
            self.inference.truth.nuisance,
            f"a value inside the model's nuisance range [{lo:.4g}, {hi:.4g}]",
        )
