"""A fast data path: blocks of whole batches sliced from in-memory tensors (no per-sample
collation, no index lists), sharded across the processes of a distributed run."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist

__all__ = ["ShuffledBatches", "batch_loader", "rank_and_world"]

Batch = tuple[torch.Tensor, ...]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process in an initialised ``torch.distributed`` group, else
    ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShuffledBatches:
    """Blocks of up to ``block`` mini-batches, sliced from one permutation of the rows per epoch
    (a new permutation from a seeded generator at every ``iter()``; none if not ``shuffle``).

    Each item is a list of mini-batches, each a tuple of tensors of ``<= batch_size`` rows, so a
    training step can take several optimiser steps (hsbi's Lightning modules do: that amortises
    Lightning's per-step overhead). In a distributed run every process draws the same permutation
    (same seed) and takes its ``tensor_split`` share of each global batch of ``batch_size`` rows:
    the processes' gradients, averaged by DDP, are those of the single-process batch, and every
    process yields the same number of blocks. The rows are then truncated to a multiple of the
    world size (at most ``world - 1`` dropped) so that no share is empty.
    """

    def __init__(
        self, *tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0, block: int = 1
    ) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors must have the same first dimension")
        self.tensors, self.batch_size, self.shuffle, self.block = tensors, batch_size, shuffle, block
        self.generator = torch.Generator().manual_seed(seed)

    def __getstate__(self) -> dict:
        # plain arrays: spawned processes receive copies (torch's pickler would move the tensors
        # into shared memory by file descriptor, which fails for tensors that borrow numpy memory)
        state = dict(self.__dict__)
        state["tensors"] = tuple(t.numpy() for t in self.tensors)
        state["generator"] = self.generator.get_state().numpy()
        return state

    def __setstate__(self, state: dict) -> None:
        generator = torch.Generator()
        generator.set_state(torch.from_numpy(state["generator"]))
        self.__dict__.update(state, tensors=tuple(torch.from_numpy(a) for a in state["tensors"]),
                             generator=generator)

    def _rows(self) -> int:
        n, world = len(self.tensors[0]), rank_and_world()[1]
        return n - n % world

    def __len__(self) -> int:
        batches = -(-self._rows() // self.batch_size)
        return -(-batches // self.block)

    def _batches(self) -> Iterator[Batch]:
        rank, world = rank_and_world()
        n = len(self.tensors[0])
        if self.shuffle:
            perm = torch.randperm(n, generator=self.generator)
            data = [t[perm] for t in self.tensors]  # one gather per epoch, then contiguous slices
        else:
            data = list(self.tensors)
        rows = self._rows()
        for i in range(0, rows, self.batch_size):
            batch = [t[i : min(i + self.batch_size, rows)] for t in data]
            yield tuple(t.tensor_split(world)[rank] for t in batch) if world > 1 else tuple(batch)

    def __iter__(self) -> Iterator[list[Batch]]:
        block: list[Batch] = []
        for batch in self._batches():
            block.append(batch)
            if len(block) == self.block:
                yield block
                block = []
        if block:
            yield block


def batch_loader(
    *tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0, block: int = 1
) -> ShuffledBatches:
    """Blocks of ``block`` batches of ``batch_size`` rows (:class:`ShuffledBatches`): shuffled
    per epoch with a generator seeded by ``seed``, or in order (validation)."""
    return ShuffledBatches(*tensors, batch_size=batch_size, shuffle=shuffle, seed=seed, block=block)
