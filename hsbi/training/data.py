"""A fast data path: whole batches sliced from in-memory tensors (no per-sample collation)."""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = ["TensorBatches", "batch_loader"]


class TensorBatches(Dataset):
    """Indexes contiguous tensors with a whole list of indices at once."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors must have the same first dimension")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(index)
        return tuple(t[idx] for t in self.tensors)


def batch_loader(
    *tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """A ``DataLoader`` yielding batches of ``batch_size`` rows via a batch sampler."""
    data = TensorBatches(*tensors)
    if shuffle:
        base = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    else:
        base = SequentialSampler(data)
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=False)
    return DataLoader(data, sampler=sampler, batch_size=None)
