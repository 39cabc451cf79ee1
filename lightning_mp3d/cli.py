"""The ``lightning`` command: a LightningCLI in subclass mode over every stage of lightning_mp3d.

``lightning fit --config configs/stage_aae.yaml`` (also ``lightning-mp3d ...`` and ``python -m lightning_mp3d ...``).
Any LightningModule / LightningDataModule importable by ``class_path`` can be configured, with ``init_args``,
``--print_config`` and command-line overrides such as ``--trainer.max_steps=10``.
"""

from __future__ import annotations

import os

from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.cli import LightningCLI


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Run (or, with ``run=False``, only build) the LightningCLI. ``args`` defaults to ``sys.argv[1:]``."""
    os.environ.setdefault("WANDB_MODE", "offline")
    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main() -> None:
    """Console-script entry (``lightning``, ``lightning-mp3d``): exits 0 on success, unlike returning the CLI object."""
    cli_main()


if __name__ == "__main__":
    main()
