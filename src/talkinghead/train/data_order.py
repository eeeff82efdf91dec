"""The data order of a training run, a pure function of ``(seed, epoch, rank, batch index)``.

``ResumableBatchSampler`` yields endless batches of ``(epoch, index)``: each pass over the data set is a
permutation seeded by ``(seed, epoch)``, sharded over the ranks, so a resumed run continues with exactly
the batches the stopped one would have drawn. ``EpochItems`` hands the epoch to a data set whose
per-item offsets depend on it (also inside DataLoader workers). ``derive_seed`` is the seed scheme the
loop uses for everything else (dropout, the objective's generator, module construction).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (seed, rank, step, a purpose tag...)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
    return (int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1)


class EpochItems(Dataset):
    """Indexes a layout dataset by ``(epoch, i)`` so per-epoch offsets also work in workers."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of ``(epoch, index)``; batch ``k`` of this rank depends only on ``k``.

    Each data-set pass is a permutation seeded by ``(seed, epoch)``, split into ``world_size``
    equal shards; ``start`` skips the batches an earlier run already consumed.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        self.per_rank = num_items // world_size
        self.per_epoch = self.per_rank // batch_size
        if self.per_epoch < 1:
            raise ValueError(
                f"{num_items} items cannot fill one batch of {batch_size} on each of "
                f"{world_size} processes; use more data, num_repeats or a smaller batch"
            )
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.num_items, self.start = num_items, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k, perm_epoch, shard = self.start, -1, []
        while True:
            epoch, j = divmod(k, self.per_epoch)
            if epoch != perm_epoch:
                gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0xDA7A))
                perm = torch.randperm(self.num_items, generator=gen)
                shard, perm_epoch = perm[self.rank :: self.world][: self.per_rank].tolist(), epoch
            yield [(epoch, i) for i in shard[j * self.batch_size : (j + 1) * self.batch_size]]
            k += 1


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
