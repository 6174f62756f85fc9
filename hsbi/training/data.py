"""A fast data path: whole batches sliced from in-memory tensors (no per-sample collation)."""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = ["ShuffledBatches", "TensorBatches", "batch_loader"]


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


class ShuffledBatches:
    """An iterable of batches sliced from one permutation of the rows per epoch: no index
    lists, no collation. A new permutation (from a seeded generator) at every ``iter()``."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors must have the same first dimension")
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self):  # noqa: ANN204
        n = len(self.tensors[0])
        if self.shuffle:
            perm = torch.randperm(n, generator=self.generator)
            data = [t[perm] for t in self.tensors]  # one gather per epoch, then contiguous slices
        else:
            data = list(self.tensors)
        for i in range(0, n, self.batch_size):
            yield tuple(t[i : i + self.batch_size] for t in data)


def batch_loader(
    *tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """Batches of ``batch_size`` rows: shuffled slices of one permutation per epoch
    (:class:`ShuffledBatches`), or a sequential ``DataLoader`` with a batch sampler."""
    if shuffle:
        return ShuffledBatches(*tensors, batch_size=batch_size, shuffle=True, seed=seed)
    data = TensorBatches(*tensors)
    if shuffle:
        base = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    else:
        base = SequentialSampler(data)
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=False)
    return DataLoader(data, sampler=sampler, batch_size=None)
