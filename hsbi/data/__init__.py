"""Data for training and inference: simulated samples and observed datasets."""

from hsbi.data.events import attach_events, read_split
from hsbi.data.simulation import (
    Dataset,
    fold_samples,
    numerator_arrays,
    simulate_observed,
    simulate_training_samples,
    training_arrays,
)

__all__ = ["Dataset", "attach_events", "read_split", "fold_samples", "numerator_arrays", "simulate_observed", "simulate_training_samples", "training_arrays"]
