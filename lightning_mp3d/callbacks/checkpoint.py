"""``LastCheckpoint``: one ``last.ckpt`` per run folder, refreshed during training and when the run is stopped.

Lightning's ``ModelCheckpoint(save_last=True, save_top_k=0)`` writes ``last.ckpt`` only at epoch/validation ends, so
a stage killed inside a long epoch loses everything; a re-run into the same folder writes ``last-v1.ckpt`` beside the
old ``last.ckpt``, which the next stage then chains from. This subclass:

- refreshes ``last.ckpt`` every ``every_n_train_steps`` optimizer steps (``trainer.global_step``: with manual
  optimization it grows by the number of optimizers stepped per batch, so the save happens on the first batch
  that *crosses* a multiple of N, not only on an exact multiple) or every ``every_minutes`` of training, whichever
  comes first;
- writes it on SIGTERM (Lightning's signal handler stops after the current batch with ``SIGTERMException``) and on
  Ctrl+C, never on other exceptions (a non-finite loss must leave the last *finite* checkpoint in place);
- keeps one file: ``enable_version_counter=False`` overwrites ``last.ckpt`` instead of writing ``last-v1.ckpt``;
- stores the global torch/NumPy/Python RNG states and puts them back when training resumes, so the random draws
  that follow a resume are those an uninterrupted run would have made.

Each write goes to a temporary file that is then renamed (Lightning's filesystem save), so a kill during the write
leaves the previous ``last.ckpt`` intact.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import numpy as np
import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from typing_extensions import override


def rng_states() -> dict[str, Any]:
    """The global torch, NumPy and Python RNG states as tensors and plain types (``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of ``rng_states``."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` keeping exactly one, periodically refreshed ``last.ckpt`` (see the module docstring).

    Args:
        dirpath: folder of ``last.ckpt``; None (the stage configs): ``<trainer.default_root_dir>/checkpoints``, inside
            the run folder (e.g. ``runs/aae/checkpoints``).
        every_n_train_steps: refresh after this many optimizer steps (0: never by steps).
        every_minutes: refresh after this many minutes of training (0: never by time).
        save_top_k: as ``ModelCheckpoint`` (0: only ``last.ckpt``).
        kwargs: other ``ModelCheckpoint`` arguments (``monitor``, ...); ``save_last`` and ``enable_version_counter``
            are fixed, and the two arguments above replace its ``every_n_train_steps``/``train_time_interval``.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int = 1000,
        every_minutes: float = 5.0,
        save_top_k: int = 0,
        **kwargs: Any,
    ) -> None:
        if every_n_train_steps < 0 or every_minutes < 0:
            raise ValueError(
                f"every_n_train_steps and every_minutes must be >= 0, got {every_n_train_steps}, {every_minutes}"
            )
        super().__init__(dirpath=dirpath, save_top_k=save_top_k, save_last=True, enable_version_counter=False, **kwargs)
        self.every_steps, self.every_minutes = every_n_train_steps, every_minutes
        self._saved_step, self._saved_time = 0, time.monotonic()
        self._rng_to_restore: dict[str, Any] | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:  # the run folder's, not ModelCheckpoint's logger-derived default
            self.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))  # as an explicit one
        super().setup(trainer, pl_module, stage)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()
        if self._rng_to_restore is not None:  # after the sanity check and set-up, as in the uninterrupted run
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        step = trainer.global_step
        due = bool(self.every_steps) and step // self.every_steps > self._saved_step // self.every_steps
        late = bool(self.every_minutes) and time.monotonic() - self._saved_time >= 60.0 * self.every_minutes
        if trainer.strategy.broadcast(due or late) and not self._should_skip_saving_checkpoint(trainer):
            self.save_last_now(trainer)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        if not self._should_skip_saving_checkpoint(trainer):
            self.save_last_now(trainer)
        if self._last_global_step_saved == trainer.global_step:  # saved now, or a periodic save of this very step
            rank_zero_info(f"Stopped at step {trainer.global_step}: saved {self.last_model_path} to resume from")

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # the final weights, wherever max_steps stopped
            self.save_last_now(trainer)

    def save_last_now(self, trainer: Trainer) -> None:
        """Write ``last.ckpt`` (all ranks call this; rank 0 writes)."""
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = trainer.global_step
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_states": rng_states()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._rng_to_restore = state_dict.get("rng_states")
