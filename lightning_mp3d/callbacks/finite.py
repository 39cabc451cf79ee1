"""``FiniteGuard``: stop training at the first non-finite loss or weight, and never checkpoint non-finite weights.

A diverged run (say a huge learning rate) otherwise trains on with NaN weights, exits 0 and hands the next stage a
checkpoint of NaNs. After every training batch the guard reads the module's parameters, and the step's logged
``train/loss*`` values on the steps where the systems log them (``callbacks/step_logs.py``; the student stages also
check each loss before its update); the first non-finite one stops the run with ``NonFiniteError`` naming the stage,
the step and the value.
It runs before the checkpoint callbacks (Lightning orders those last), so ``last.ckpt`` keeps the last finite weights;
``on_save_checkpoint`` refuses any checkpoint whose weights are not finite, whoever asks for it.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_mp3d.callbacks.step_logs import logs_this_step
from lightning_mp3d.checkpoints import non_finite_keys


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or weight."""


def weights_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter is finite, with one device synchronisation (not one per tensor).

    ``0 * p`` is 0 for a finite weight and NaN for a NaN or infinite one, so the norms of the zeroed tensors are all
    finite exactly when the weights are (no overflow, unlike a norm of the weights): two fused ``_foreach`` calls,
    about 3x faster on a CPU than one ``isfinite().all()`` per tensor.
    """
    params = [p.detach() for p in module.parameters()]
    if not params:
        return True
    return bool(torch.stack(torch._foreach_norm(torch._foreach_mul(params, 0.0))).isfinite().all())


def stage_of(module: LightningModule) -> str:
    """The stage name a module reports (``stage_name``), else its class name."""
    return str(getattr(module, "stage_name", None) or type(module).__name__)


class FiniteGuard(Callback):
    """Raise ``NonFiniteError`` at the first non-finite ``train/loss*`` value or parameter (see the module docstring).

    Args:
        check_weights_every_n_batches: how often the parameters are checked (1: every batch; the logged losses are
            checked whenever they are logged, and the weights again before every checkpoint).
    """

    def __init__(self, check_weights_every_n_batches: int = 1) -> None:
        if check_weights_every_n_batches < 1:
            raise ValueError(f"check_weights_every_n_batches must be >= 1, got {check_weights_every_n_batches}")
        self.every = check_weights_every_n_batches

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # the systems log on the steps that reach the loggers (callbacks/step_logs.py): the values are fresh then, and
        # reading callback_metrics recomputes every logged entry
        metrics = trainer.callback_metrics if logs_this_step(pl_module) else {}
        logged = {k: v for k, v in metrics.items() if k.startswith("train/loss")}
        bad = non_finite_keys(logged)
        if not bad and (batch_idx + 1) % self.every == 0 and not weights_finite(pl_module):
            bad = non_finite_keys(dict(pl_module.named_parameters()))
        if bad:
            values = ", ".join(f"{k}={logged[k].item()}" if k in logged else f"weight {k}" for k in bad[:5])
            last = next((cb.last_model_path for cb in trainer.checkpoint_callbacks if cb.last_model_path), None)
            kept = f"the last finite checkpoint is {last}" if last else "no checkpoint was written yet"
            raise NonFiniteError(
                f"stage '{stage_of(pl_module)}': non-finite value at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}, batch {batch_idx}): {values}; training stopped, {kept}. "
                "Lower the learning rate or check the data."
            )

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = non_finite_keys(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(
                f"stage '{stage_of(pl_module)}': refusing to write a checkpoint at step {trainer.global_step} with "
                f"non-finite weights {bad[:5]}"
            )
