"""Simulated samples for ratio training (eq. 5 of arXiv:2503.07962) and observed datasets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsbi.config import AnalysisConfig
from hsbi.exceptions import DataError
from hsbi.models.base import MixtureModel
from hsbi.models.constraint import Constraint

__all__ = [
    "Dataset",
    "fold_samples",
    "numerator_arrays",
    "simulate_observed",
    "simulate_training_samples",
    "training_arrays",
]


@dataclass(frozen=True)
class Dataset:
    """An observed (or toy, or Asimov) dataset: events ``x`` of shape ``(n, D)``, the nuisance's
    auxiliary measurement ``aux`` (same units as the nuisance) and optional event weights
    ``(n,)`` (Asimov datasets carry expected counts as weights)."""

    x: np.ndarray
    aux: float
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or not np.all(np.isfinite(self.x)):
            raise DataError("dataset events must be a finite array of shape (n, D)")
        if self.weights is not None and (
            self.weights.shape != (len(self.x),) or not np.all(np.isfinite(self.weights))
        ):
            raise DataError("dataset weights must be finite with one weight per event")
        if not np.isfinite(self.aux):
            raise DataError(f"auxiliary measurement must be finite, got {self.aux!r}")


def simulate_training_samples(model: MixtureModel, cfg: AnalysisConfig) -> dict[str, np.ndarray]:
    """Numerator samples per process with ``z ~ U(range)`` and a reference sample.

    The reference is the equal mixture of all processes at ``z0`` (``model.nuisance_reference``),
    each event presented with a ``z`` drawn from the same uniform prior, so a classifier
    ``f(x, z)`` learns ``p_c(x | z) / p_ref(x)``. With ``simulation.reference: marginal`` the
    reference events are generated at their own ``z' ~ U(range)`` (``p_ref`` is then the
    nuisance-marginal mixture, still independent of the presented ``z``): for data-driven models,
    whose events are a finite set, a reference at one point would consist of exact repeats of
    those events, which a classifier tells apart from the smeared numerator. Keys: ``{split}_{process}_{x|z}`` and
    ``{split}_reference_{x|z}`` for split in train, val. A data-driven model draws them from
    its ``train`` and ``validation`` events (``model.for_split``).
    """
    rng = np.random.default_rng(cfg.simulation.seed)
    lo, hi = model.nuisance_range
    z0, marginal = cfg.model.nuisance_reference, cfg.simulation.reference == "marginal"
    out: dict[str, np.ndarray] = {}
    for split, n in (("train", cfg.simulation.n_train), ("val", cfg.simulation.n_val)):
        model = model.for_split("train" if split == "train" else "validation")  # data-driven models
        for proc in model.processes:
            z = rng.uniform(lo, hi, n)
            out[f"{split}_{proc}_x"] = model.sample(rng, proc, z).astype(np.float32)
            out[f"{split}_{proc}_z"] = z.astype(np.float32)
        which = rng.integers(0, len(model.processes), n)
        x_ref = np.empty((n, model.n_features))
        for i, proc in enumerate(model.processes):
            sel = which == i
            z_gen = rng.uniform(lo, hi, sel.sum()) if marginal else np.full(sel.sum(), z0)
            x_ref[sel] = model.sample(rng, proc, z_gen)
        out[f"{split}_reference_x"] = x_ref.astype(np.float32)
        out[f"{split}_reference_z"] = rng.uniform(lo, hi, n).astype(np.float32)
    return out


def fold_samples(samples: dict[str, np.ndarray], fold: int, folds: int) -> dict[str, np.ndarray]:
    """Cross-training: the ``train`` split cut into ``folds`` contiguous parts (per class; events
    are i.i.d.), part ``fold`` becoming the ``val`` split and the others the ``train`` split. The
    original ``val`` split stays out of it (kept as ``heldout``: the Ensemble step's data)."""
    if not 0 <= fold < folds:
        raise DataError(f"fold {fold}: expected 0 <= fold < training.folds = {folds}")
    out = {f"heldout_{k[4:]}": v for k, v in samples.items() if k.startswith("val_")}
    for key, arr in samples.items():
        if key.startswith("train_"):
            parts = np.array_split(arr, folds)
            if len(parts[fold]) == 0:
                raise DataError(f"training sample {key!r} has {len(arr)} events: too few for {folds} folds")
            out[f"val_{key[6:]}"] = parts[fold]
            out[key] = np.concatenate(parts[:fold] + parts[fold + 1:])
    return out


def numerator_arrays(
    samples: dict[str, np.ndarray], split: str, process: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, z)`` of one process's numerator sample (density estimation needs no reference)."""
    try:
        x, z = samples[f"{split}_{process}_x"], samples[f"{split}_{process}_z"]
    except KeyError as err:
        raise DataError(f"training samples have no array {err.args[0]!r}") from None
    if len(x) == 0:
        raise DataError(f"the {split} split for process {process!r} is empty")
    return x, z


def training_arrays(
    samples: dict[str, np.ndarray], split: str, process: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, z, y)`` for one process's classifier: numerator ``y = 1``, reference ``y = 0``."""
    x_num, z_num = numerator_arrays(samples, split, process)
    try:
        x = np.concatenate([x_num, samples[f"{split}_reference_x"]])
        z = np.concatenate([z_num, samples[f"{split}_reference_z"]])
    except KeyError as err:
        raise DataError(f"training samples have no array {err.args[0]!r}") from None
    n_num = len(x_num)
    y = np.concatenate([np.ones(n_num), np.zeros(len(x) - n_num)]).astype(np.float32)
    if len(x) == 0:
        raise DataError(f"the {split} split for process {process!r} is empty")
    return x, z, y


def simulate_observed(model: MixtureModel, cfg: AnalysisConfig) -> Dataset:
    """The 'observed' dataset at the configured truth, with its auxiliary measurement (for a
    data-driven model, drawn from its ``test`` events)."""
    inf = cfg.inference
    model = model.for_split("test")
    rng = np.random.default_rng(inf.observed_seed)
    x = model.sample_dataset(rng, inf.truth.mu, inf.truth.nuisance, inf.n_expected)
    aux = Constraint.of(inf.constraint, inf.constraint_sigma).sample(rng, inf.truth.nuisance)
    return Dataset(x=x, aux=aux)
