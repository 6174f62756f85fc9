"""Analysis configuration: frozen, self-validating dataclasses read from YAML."""

from hsbi.config.schema import (
    AnalysisConfig,
    EstimatorConfig,
    InferenceConfig,
    ModelConfig,
    NeymanConfig,
    SimulationConfig,
    TrainingConfig,
)
from hsbi.config.loader import DEFAULT_CONFIG, apply_overrides, load_config, parse_overrides

__all__ = [
    "DEFAULT_CONFIG",
    "AnalysisConfig",
    "EstimatorConfig",
    "InferenceConfig",
    "ModelConfig",
    "NeymanConfig",
    "SimulationConfig",
    "TrainingConfig",
    "apply_overrides",
    "load_config",
    "parse_overrides",
]
