"""Where and how networks train: the keys ``training.accelerator``, ``precision``,
``gradient_clip_val`` and ``gradient_clip_algorithm``, shared by the estimators' and the set
estimators' training sections (checked here, without torch: whether a GPU is visible is checked
when training starts, :func:`hsbi.training.fit.accelerator_for`)."""

from __future__ import annotations

from typing import Any

from hsbi.exceptions import ConfigError

__all__ = ["ACCELERATORS", "CLIP_ALGORITHMS", "PRECISIONS", "check_device_keys"]

ACCELERATORS = ("cpu", "gpu", "auto")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
CLIP_ALGORITHMS = ("norm", "value")


def check_device_keys(cfg: Any, section: str = "training") -> None:
    """Validate (and normalise: YAML's unquoted 32 is an int, Lightning says 32-true) the four
    keys of the frozen dataclass ``cfg``; one-line ConfigErrors naming ``section.key``."""
    if str(cfg.precision) in ("32", "32-true"):
        object.__setattr__(cfg, "precision", "32")

    def require(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"config key '{section}.{key}' = {getattr(cfg, key)!r}: expected {expected}")

    require(cfg.accelerator in ACCELERATORS, "accelerator", f"one of {ACCELERATORS}")
    require(cfg.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
    require(not (cfg.precision == "16-mixed" and cfg.accelerator == "cpu"), "precision",
            f"32 or bf16-mixed with {section}.accelerator cpu (float16 mixed precision needs a GPU: accelerator "
            "gpu or auto)")
    require(isinstance(cfg.gradient_clip_val, (int, float)) and cfg.gradient_clip_val >= 0, "gradient_clip_val",
            "a number >= 0 (0: no clipping)")
    require(cfg.gradient_clip_algorithm in CLIP_ALGORITHMS, "gradient_clip_algorithm", f"one of {CLIP_ALGORITHMS}")
