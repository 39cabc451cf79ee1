"""Synthetic batches made on the training device: the loader yields only each batch's seed.

The on-the-fly streams (``datamodules/streams.py``) draw batch ``i`` from a generator seeded by
``batch_seed(seed, split, rank, epoch, i)``. With ``device="cpu"`` (the default) the DataLoader (and its workers)
makes the whole batch on the CPU, as before. With any other ``device`` the stream's ``make`` returns only that seed,
``{"batch_seed": int}`` (a deferred batch: a few bytes, nothing to transfer), and the datamodule's
``on_after_batch_transfer`` hook makes the batch in one vectorised call on the generation device from
``torch.Generator(device).manual_seed(batch_seed)``:

- ``"auto"``: the device Lightning trains on (``trainer.strategy.root_device``; the CPU without a trainer);
- an explicit device (``"cuda:0"``, ``"cpu"`` through the deferred path in tests, ``"meta"`` for shape checks).

Resuming is unchanged: the loaders' state (epoch, position) picks the same seeds, so a resumed run makes the same
batches. On the CPU the deferred path equals the old one bit for bit (same seed, same generator type, same calls);
on a GPU the batches are those of the device's own generator (Philox): reproducible on that device, not equal to the
CPU's. ``meta`` tensors have no values, so they are drawn without a generator.
"""

from __future__ import annotations

from typing import Any

import torch

SEED_KEY = "batch_seed"
DEVICES_HELP = '"cpu" (made by the DataLoader), "auto" (the training device) or a torch device'


def check_device(device: str) -> str:
    """Validate a datamodule's ``device`` argument (``DEVICES_HELP``)."""
    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device must be {DEVICES_HELP}, got {device!r}") from err
    return device


def defers(device: str) -> bool:
    """True when batches are made in ``on_after_batch_transfer`` rather than by the DataLoader."""
    return device != "cpu"


def deferred_batch(generator: torch.Generator) -> dict[str, int]:
    """The deferred form of the batch that ``generator`` (freshly seeded by the stream) would make."""
    return {SEED_KEY: generator.initial_seed()}


def is_deferred(batch: Any) -> bool:
    """Whether ``batch`` is a deferred batch (``{"batch_seed": int}``) still to be made on the generation device."""
    return isinstance(batch, dict) and SEED_KEY in batch


def generation_device(device: str, trainer: Any = None) -> torch.device:
    """The device a deferred batch is made on: ``device``, or for ``"auto"`` the trainer's root device."""
    if device != "auto":
        return torch.device(device)
    if trainer is not None and getattr(trainer, "strategy", None) is not None:
        return trainer.strategy.root_device
    return torch.device("cpu")


def seeded_generator(seed: int, device: torch.device) -> torch.Generator | None:
    """``torch.Generator(device).manual_seed(seed)``; None on ``meta`` (no values to draw)."""
    if device.type == "meta":
        return None
    return torch.Generator(device=device).manual_seed(int(seed))
