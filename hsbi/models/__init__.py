"""Physics models with exact likelihoods, used as embedded defaults and for validation."""

from hsbi.models.base import MixtureModel
from hsbi.models.gaussian_rotation import GaussianRotation
from hsbi.models.higgs_tes import HiggsTES
from hsbi.models.on_off import OnOffMixture

__all__ = ["MixtureModel", "GaussianRotation", "OnOffMixture", "HiggsTES", "MODELS", "build_model"]

#: Registry of models by the name used in analysis configs.
MODELS = {"gaussian_rotation": GaussianRotation, "on_off": OnOffMixture, "higgs_tes": HiggsTES}


def build_model(name: str, **kwargs: float) -> MixtureModel:
    """Instantiate a registered model by name."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
