"""Pictures from inside a stage: written as PNG into the run folder and sent to W&B when it is the logger.

Not a callback (it moved here from ``callbacks/``): systems call ``log_figure(self, "val/decoded_poses", fig)`` with a
figure from ``visualize``. Nothing here needs a network: W&B runs offline unless the user sets
``WANDB_MODE=online``. Only global rank 0 writes or logs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from pytorch_lightning import LightningModule  # noqa: E402
from pytorch_lightning.loggers import WandbLogger  # noqa: E402

from lightning_mp3d.atomic import save_figure_atomic  # noqa: E402


def run_folder(module: LightningModule) -> Path:
    """The folder of the current run: the logger's log_dir if it has one, else the trainer's root dir."""
    trainer = module.trainer
    path = trainer.log_dir or trainer.default_root_dir
    return Path(path)


def log_figure(module: LightningModule, key: str, fig: plt.Figure, close: bool = True) -> Path | None:
    """Save ``fig`` as ``<run>/media/<key with / -> _>_step<global_step>.png`` and log it to W&B if active.

    Returns the PNG path on rank 0, None elsewhere.
    """
    path = None
    if module.trainer.is_global_zero:
        name = key.replace("/", "_")
        path = run_folder(module) / "media" / f"{name}_step{module.global_step:07d}.png"
        save_figure_atomic(fig, path, bbox_inches="tight")
        for logger in module.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log({key: wandb.Image(str(path)), "trainer/global_step": module.global_step})
    if close:
        plt.close(fig)
    return path
