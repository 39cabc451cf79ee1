"""Seeded on-the-fly batch streams (D_syn, rendered D_I, artificial poses) and the loader that makes them resumable.

Batch ``i`` of epoch ``e`` on rank ``r`` is drawn from its own ``torch.Generator`` seeded by
``batch_seed(seed, split, r, e, i)``, so a batch depends on nothing but those five numbers: not on the number of
DataLoader workers (worker ``w`` of ``W`` makes batches ``start + w, start + w + W, ...``), not on the global RNG, and
not on what ran before it. That is what lets a run resume mid-epoch: ``EpochDataLoader`` remembers (epoch, position)
and its ``state_dict``/``load_state_dict`` are saved and restored by Lightning in the checkpoint's loop state (for a
``CombinedLoader``, per inner loader), so a resumed run continues with exactly the batches an uninterrupted one
would have drawn.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def batch_seed(*parts: int) -> int:
    """A 63-bit seed mixing integers (seed, split, rank, epoch, index) with NumPy's SeedSequence."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32).astype(np.uint64) @ [1, 2**32]
    ) & (2**63 - 1)


def rank_and_world() -> tuple[int, int]:
    """This process's (rank, world size) in the default process group ((0, 1) without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def distributed_rank() -> int:
    """This process's rank in the default process group (0 without one)."""
    return rank_and_world()[0]


class SeededBatchStream(IterableDataset):
    """Base of the on-the-fly streams: ``num_batches`` batches per epoch, batch ``i`` made by ``make(generator)``.

    Subclasses implement ``make(generator) -> batch``. ``rank=None`` reads the rank from the default process group
    when iterated (Lightning gives iterable datasets no sampler, so the stream splits by rank itself).
    """

    def __init__(self, num_batches: int, seed: int = 0, *, split: int = 0, rank: int | None = None) -> None:
        super().__init__()
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        self.num_batches, self.seed, self.split, self.rank = num_batches, seed, split, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch that ``__iter__`` draws and the batch it starts at (to resume mid-epoch)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_batches

    def generator(self, index: int) -> torch.Generator:
        """The generator of batch ``index`` of the current epoch on this rank."""
        rank = distributed_rank() if self.rank is None else self.rank
        return torch.Generator().manual_seed(batch_seed(self.seed, self.split, rank, self.epoch, index))

    @abstractmethod
    def make(self, generator: torch.Generator) -> Any:
        """One batch drawn with ``generator`` (each subclass says what a batch is)."""

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for index in range(self.start + worker, self.num_batches, workers):
            yield self.make(self.generator(index))


class EpochDataLoader(DataLoader):
    """A DataLoader over a ``SeededBatchStream`` (``batch_size=None``): each iteration draws the stream's next epoch.

    Stateful for Lightning: ``state_dict()`` is ``{"epoch", "position"}``, the next batch to draw; after
    ``load_state_dict`` the next iteration continues there. An iteration left unfinished (a shorter partner loader
    in a ``CombinedLoader``, ``max_steps``) does not hold back the next one, which starts a new epoch. Workers must
    not be persistent (they would keep an old copy of the stream's epoch).
    """

    def __init__(self, dataset: SeededBatchStream, *args: Any, **kwargs: Any) -> None:
        if not isinstance(dataset, SeededBatchStream):
            raise TypeError(f"EpochDataLoader needs a SeededBatchStream, got {type(dataset).__name__}")
        if kwargs.get("persistent_workers"):
            raise ValueError("EpochDataLoader cannot use persistent workers: each epoch re-sends the stream's epoch")
        super().__init__(dataset, *args, **kwargs)
        self._next = (0, 0)  # (epoch, position) the next iteration starts at
        self._current: list[int] | None = None  # (epoch, batches drawn) of the running iteration

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self._next
        self._next = (epoch + 1, 0)
        self._current = [epoch, start]
        self.dataset.set_epoch(epoch, start)
        return self._count(super().__iter__())

    def _count(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._current[1] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The next batch to draw: ``{"epoch": e, "position": i}`` (an epoch drawn to its end points at the next)."""
        epoch, position = self._next if self._current is None else self._current
        if position >= len(self.dataset):
            epoch, position = epoch + 1, 0
        return {"epoch": epoch, "position": position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at ``state`` with the next iteration."""
        self._next, self._current = (int(state["epoch"]), int(state["position"])), None
