"""Sections of the analysis config; each validates itself and names the offending key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from hsbi.config.device import check_device_keys
from hsbi.config.samples import SampleConfig
from hsbi.config.sets import SetsConfig
from hsbi.config.statmodel import StatModelConfig
from hsbi.config.tune import TuneConfig
from hsbi.exceptions import ConfigError
from hsbi.models import MODELS
from hsbi.models.base import MixtureModel
from hsbi.models.constraint import CONSTRAINTS
from hsbi.models.quadrature import expected_fisher, profiled_nuisance_width

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

ESTIMATOR_KINDS = ("lre", "dle", "set")  # set: the dataset-level ratio of the sets section
ACTIVATIONS = ("relu", "silu", "tanh", "elu")
COMBINE_METHODS = ("mean", "median", "weighted")
CALIBRATIONS = ("none", "temperature", "isotonic")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork")
LOGGERS = ("csv", "tensorboard", "mlflow", "none")


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' = {value!r}: expected {expected}")


@dataclass(frozen=True)
class ModelConfig:
    """The physics model: ``name`` in ``hsbi.models.MODELS``; ``radius`` (for the models that
    have one) and other constructor arguments in ``parameters`` (the model's defaults if unset)."""

    name: str = "gaussian_rotation"
    radius: float = 2.0
    nuisance_reference: float = 0.7853981633974483
    parameters: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.name in MODELS, "model.name", self.name, f"one of {sorted(MODELS)}")
        _require(self.radius > 0, "model.radius", self.radius, "a positive number")
        known = [p for p in MODELS[self.name].parameters if p != "radius"]
        for key, value in self.parameters.items():
            _require(key in known, f"model.parameters.{key}", value,
                     f"a parameter of model '{self.name}': one of {known}" if known
                     else f"no parameters: model '{self.name}' has none (besides model.radius)")

    def build(self) -> MixtureModel:
        cls = MODELS[self.name]
        kwargs = {**self.parameters, **({"radius": self.radius} if "radius" in cls.parameters else {})}
        try:
            model = cls(**kwargs)
        except ValueError as err:
            raise ConfigError(f"config key 'model.parameters' = {self.parameters!r}: {err}") from None
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
    reference: str = "point"  # the ratio denominator: events at model.nuisance_reference, or "marginal"

    def __post_init__(self) -> None:
        _require(self.reference in ("point", "marginal"), "simulation.reference", self.reference,
                 "'point' (reference events at model.nuisance_reference) or 'marginal' (at nuisance "
                 "values drawn from the training prior)")
        _require(self.n_train > 0, "simulation.n_train", self.n_train, "a positive integer")
        _require(self.n_val > 0, "simulation.n_val", self.n_val, "a positive integer")


@dataclass(frozen=True)
class EstimatorConfig:
    kind: str = "lre"
    widths: tuple[int, ...] = (64, 64)
    activation: str = "silu"
    transforms: int = 3  # dle: spline transforms of the flow
    onnx: bool = False  # also export each network as ONNX (hsbi.estimators.io.export_onnx)
    combine: str = "mean"  # the Ensemble step: mean or median of log ratios, or fitted weights
    calibration: str = "none"  # per-process temperature or isotonic map of the logit
    normalise: bool = False  # self-normalise the ratios on the reference sample

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
        _require(self.combine in COMBINE_METHODS, "estimator.combine", self.combine, f"one of {COMBINE_METHODS}")
        _require(self.calibration in CALIBRATIONS, "estimator.calibration", self.calibration,
                 f"one of {CALIBRATIONS}")
        _require(isinstance(self.normalise, bool), "estimator.normalise", self.normalise, "true or false")


@dataclass(frozen=True)
class TrainingConfig:
    members: int = 3
    folds: int = 1  # > 1: each member is trained once per fold of the train split (cross-training)
    seed: int = 100
    max_epochs: int = 12
    batch_size: int = 1024
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    devices: int = 1  # processes per node; > 1: DDP on CPU (gloo), see hsbi.training.fit
    nodes: int = 1  # > 1 only in a SLURM job step of devices x nodes tasks (srun)
    strategy: str = "auto"  # auto | ddp | ddp_spawn (spawned processes) | ddp_fork
    logger: str = "csv"  # csv | tensorboard | mlflow | none
    accelerator: str = "cpu"  # cpu | gpu | auto (a GPU where torch sees one)
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed (GPU only; a gradient scaler)
    gradient_clip_val: float = 0.0  # > 0: clip the gradients to it (after DDP's all-reduce, AMP's unscaling)
    gradient_clip_algorithm: str = "norm"  # norm | value

    def __post_init__(self) -> None:
        check_device_keys(self)
        _require(self.members >= 1, "training.members", self.members, "an integer >= 1")
        _require(self.folds >= 1, "training.folds", self.folds, "an integer >= 1")
        _require(self.devices >= 1, "training.devices", self.devices, "an integer >= 1 (processes per node)")
        _require(self.nodes >= 1, "training.nodes", self.nodes, "an integer >= 1")
        _require(self.strategy in STRATEGIES, "training.strategy", self.strategy, f"one of {STRATEGIES}")
        _require(self.logger in LOGGERS, "training.logger", self.logger, f"one of {LOGGERS}")
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
    """The point the observed data are simulated at (checked against the bounds by
    :class:`AnalysisConfig`, which knows the model)."""

    mu: float = 0.2
    nuisance: float = 0.7853981633974483


@dataclass(frozen=True)
class NeymanConfig:
    """The belt's grid in mu (``mu_min``/``mu_max`` ``None``: sized from the expected Fisher
    width at the truth, :func:`auto_grid`; resolved when the analysis config is built) and its toys."""

    mu_min: float | None = None
    mu_max: float | None = None
    points: int = 11
    toys: int = 200
    seed: int = 11
    method: str = "simulator"  # or "pool": toys from per-process pools, batched Newton fits
    chunk: int = 200  # toys per NeymanToys branch; more toys per point add chunks, reusing the old

    def __post_init__(self) -> None:
        _require(self.method in ("simulator", "pool"), "inference.neyman.method", self.method,
                 "'simulator' (fresh events per toy) or 'pool' (resampled pools, batched fits)")
        _require(self.chunk >= 1, "inference.neyman.chunk", self.chunk, "an integer >= 1 (toys per branch)")
        _require(
            None in (self.mu_min, self.mu_max) or self.mu_min < self.mu_max,  # in the POI bounds: AnalysisConfig
            "inference.neyman.mu_min/mu_max",
            (self.mu_min, self.mu_max),
            "mu_min < mu_max",
        )
        _require(self.points >= 2, "inference.neyman.points", self.points, "an integer >= 2")
        _require(self.toys >= 10, "inference.neyman.toys", self.toys, "an integer >= 10")

    @property
    def grid(self) -> tuple[float, ...]:
        if self.mu_min is None or self.mu_max is None:
            raise ConfigError("inference.neyman.mu_min/mu_max are resolved by AnalysisConfig (null: from the "
                              "expected Fisher width); build the analysis config to get the grid")
        step = (self.mu_max - self.mu_min) / (self.points - 1)
        return tuple(round(self.mu_min + i * step, 12) for i in range(self.points))

    @property
    def chunks(self) -> tuple[int, ...]:
        """Toys per chunk at each point: full chunks of ``chunk`` toys, then the remainder."""
        full, rest = divmod(self.toys, self.chunk)
        return (self.chunk,) * full + ((rest,) if rest else ())


@dataclass(frozen=True)
class CoverageConfig:
    datasets: int = 1000
    seed: int = 23
    width_datasets: int = 40
    method: str = "simulator"  # or "pool": datasets resampled from per-process pools, batched fits
    # the Neyman reference toys: at the true nuisance ("truth", the ideal construction) or at each
    # dataset's conditional MLE of the nuisance ("profiled", the construction NeymanToys makes)
    reference: str = "truth"

    def __post_init__(self) -> None:
        _require(self.method in ("simulator", "pool"), "inference.coverage.method", self.method,
                 "'simulator' (fresh events, one fit per dataset) or 'pool' (resampled pools, batched fits)")
        _require(self.reference in ("truth", "profiled"), "inference.coverage.reference", self.reference,
                 "'truth' (reference toys at the true nuisance) or 'profiled' (at each dataset's "
                 "conditional MLE of the nuisance, as NeymanToys)")
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
    poi_bounds: tuple[float, float] | None = None  # None: the model's poi_range
    nuisance_bounds: tuple[float, float] | None = None  # None: the model's nuisance_range
    constraint: str = "gaussian"  # the nuisance's auxiliary measurement: gaussian, lognormal, none
    constraint_sigma: float = 0.1  # its width (lognormal: relative)
    observed_seed: int = 7
    levels: tuple[float, ...] = (0.6827, 0.95)
    scan_points: int = 121
    neyman: NeymanConfig = field(default_factory=NeymanConfig)
    coverage: CoverageConfig = field(default_factory=CoverageConfig)

    def __post_init__(self) -> None:
        _require(self.poi == "mu", "inference.poi", self.poi, "'mu' (the model's parameter of interest)")
        _require(self.n_expected > 0, "inference.n_expected", self.n_expected, "a positive number")
        for key in ("poi_bounds", "nuisance_bounds"):
            bounds = getattr(self, key)
            _require(bounds is None or (len(bounds) == 2 and bounds[0] < bounds[1]), f"inference.{key}",
                     bounds if bounds is None else list(bounds), "null or [low, high] with low < high")
        _require(self.constraint in CONSTRAINTS, "inference.constraint", self.constraint, f"one of {CONSTRAINTS}")
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
    tune: TuneConfig = field(default_factory=TuneConfig)
    sets: SetsConfig = field(default_factory=SetsConfig)
    statmodel: StatModelConfig = field(default_factory=StatModelConfig)

    def __post_init__(self) -> None:
        names = [s.name for s in self.samples]
        _require(len(set(names)) == len(names), "samples", names, "unique sample names")
        if self.statmodel.declared:
            _require(bool(self.samples), "statmodel", "(declared)",
                     "a samples section: the model's processes are ingested samples")
            self.statmodel.check_samples({s.name: s for s in self.samples})
        object.__setattr__(self, "inference", _check_inference(self.inference, self.model.build()))


def _bounds(key: str, given: tuple[float, float] | None, full: tuple[float, float], label: str) -> tuple[float, float]:
    """``given`` bounds (checked inside the model's ``full`` range), or ``full`` when unset."""
    if given is None:
        return float(full[0]), float(full[1])
    _require(full[0] <= given[0] and given[1] <= full[1], key, list(given),
             f"[low, high] inside the model's range [{full[0]:.4g}, {full[1]:.4g}] of the {label}")
    return float(given[0]), float(given[1])


def _require_identified(inf: InferenceConfig, model: MixtureModel, nuisance: tuple[float, float]) -> None:
    """``constraint: none`` needs a nuisance the data determine: its expected (Asimov) Fisher
    width at the truth, with ``mu`` profiled, must be finite and below the width of its bounds."""
    width = profiled_nuisance_width(expected_fisher(model, inf.truth.mu, inf.truth.nuisance, inf.n_expected))
    span = nuisance[1] - nuisance[0]
    _require(width < span, "inference.constraint", inf.constraint,
             f"'gaussian' or 'lognormal': the data alone do not determine the {model.nuisance_label} "
             f"(expected Fisher width {width:.3g} at the truth with mu profiled, not below the width "
             f"{span:.3g} of inference.nuisance_bounds)")


def _check_inference(inf: InferenceConfig, model: MixtureModel) -> InferenceConfig:
    """Truth, Neyman grid and constraint against the model; the bounds resolved (no ``None``)."""
    poi = _bounds("inference.poi_bounds", inf.poi_bounds, model.poi_range, model.poi_label)
    nuisance = _bounds("inference.nuisance_bounds", inf.nuisance_bounds, model.nuisance_range,
                       model.nuisance_label)
    _require(poi[0] <= inf.truth.mu <= poi[1], "inference.truth.mu", inf.truth.mu,
             f"a {model.poi_label} in [{poi[0]:g}, {poi[1]:g}] (inference.poi_bounds)")
    _require(nuisance[0] <= inf.truth.nuisance <= nuisance[1], "inference.truth.nuisance",
             inf.truth.nuisance, f"a value inside the nuisance bounds [{nuisance[0]:.4g}, {nuisance[1]:.4g}] "
             "(inference.nuisance_bounds, by default the model's nuisance range)")
    neyman = _resolve_grid(inf, model, poi, nuisance)
    grid = (neyman.mu_min, neyman.mu_max)
    _require(grid[0] < grid[1], "inference.neyman.mu_min/mu_max", grid, "mu_min < mu_max")
    _require(poi[0] <= grid[0] and grid[1] <= poi[1], "inference.neyman.mu_min/mu_max", grid,
             f"a grid inside the POI bounds [{poi[0]:g}, {poi[1]:g}] (inference.poi_bounds)")
    if inf.constraint == "lognormal":
        _require(nuisance[0] > 0, "inference.nuisance_bounds", list(nuisance),
                 "positive bounds: a lognormal constraint needs a positive nuisance")
        _require(inf.neyman.method != "pool", "inference.neyman.method", inf.neyman.method,
                 "'simulator' with inference.constraint: lognormal (pooled toys fit a Gaussian or no constraint)")
    if inf.constraint == "none" and model.exact:  # data-driven models: no expected Fisher matrix
        _require_identified(inf, model, nuisance)
    return dataclasses.replace(inf, poi_bounds=poi, nuisance_bounds=nuisance, neyman=neyman)


#: The auto grid reaches this many standard deviations of mu_hat beyond the widest interval's
#: half-width: a 95% interval is cut by it with probability P(|Z| > 3) = 0.27%.
AUTO_GRID_MARGIN = 3.0


def expected_sigma_mu(inf: InferenceConfig, model: MixtureModel) -> float:
    """The expected (Fisher) width of mu_hat at the truth, nuisance profiled, its constraint
    term included (``statistics.md``): ``sqrt((I^-1)_mu,mu)``."""
    mu, z = inf.truth.mu, inf.truth.nuisance
    fisher = expected_fisher(model, mu, z, inf.n_expected)
    if inf.constraint != "none":
        scale = z if inf.constraint == "lognormal" else 1.0
        fisher[1, 1] += 1.0 / (scale * inf.constraint_sigma) ** 2
    det = fisher[0, 0] * fisher[1, 1] - fisher[0, 1] ** 2
    return float(np.sqrt(fisher[1, 1] / det)) if det > 0 else float("inf")


def auto_grid(inf: InferenceConfig, model: MixtureModel, poi: tuple[float, float]) -> tuple[float, float]:
    """``truth +- (sqrt(F^-1_chi2_1(max level)) + 3) sigma_mu`` within the POI bounds, rounded
    to 4 significant digits (the grid enters branch addresses: the same on every machine)."""
    sigma = expected_sigma_mu(inf, model)
    _require(np.isfinite(sigma) and sigma > 0, "inference.neyman.mu_min/mu_max", None,
             "explicit values: the expected Fisher width of mu is not finite at the truth")
    # chi2.ppf(level, 1) as the squared normal quantile (equal to scipy's to ~1e-15): importing
    # scipy.special here cost every law command on a default config ~0.4 s
    chi2_ppf = NormalDist().inv_cdf(0.5 + max(inf.levels) / 2) ** 2
    half = (np.sqrt(chi2_ppf) + AUTO_GRID_MARGIN) * sigma
    mu = inf.truth.mu
    return max(poi[0], float(f"{mu - half:.4g}")), min(poi[1], float(f"{mu + half:.4g}"))


def _resolve_grid(inf: InferenceConfig, model: MixtureModel, poi: tuple[float, float],
                  nuisance: tuple[float, float]) -> NeymanConfig:
    """The Neyman config with ``mu_min``/``mu_max`` resolved: explicit values kept, ``null``
    ones sized from the expected Fisher width (:func:`auto_grid`, exact models only)."""
    ney = inf.neyman
    if ney.mu_min is not None and ney.mu_max is not None:
        return ney
    _require(model.exact, "inference.neyman.mu_min/mu_max", (ney.mu_min, ney.mu_max),
             f"explicit values for model {type(model).__name__}: without an exact likelihood the grid is "
             "not sized from the expected Fisher width")
    lo, hi = auto_grid(dataclasses.replace(inf, nuisance_bounds=nuisance), model, poi)
    return dataclasses.replace(ney, mu_min=lo if ney.mu_min is None else ney.mu_min,
                               mu_max=hi if ney.mu_max is None else ney.mu_max)
