"""The ``lightning`` command: a LightningCLI in subclass mode over every stage of lightning_mp3d.

``lightning fit --config stage_aae.yaml`` (also ``lightning-mp3d ...`` and ``python -m lightning_mp3d ...``).
Any LightningModule / LightningDataModule importable by ``class_path`` can be configured, with ``init_args``,
``--print_config`` and command-line overrides such as ``--trainer.max_steps=10``.

Config names: a ``--config``/``-c`` value that is not a file where the command runs is looked up in the project's
``configs/`` (shipped inside the package as ``lightning_mp3d/configs``, a link to the top-level ``configs/`` in a
source checkout), so ``stage_phase1.yaml`` and ``tiny/stage_phase1.yaml`` work from any folder after ``pip install``;
``configs/stage_phase1.yaml`` (a real path) works too. Relative paths inside the configs (``runs/<stage>/...``) stay
relative to the folder the command runs in.

One run folder: a stage config names its folder once, as ``trainer.default_root_dir`` (``runs/<stage>``); the logger's
``save_dir`` (when left at its default) and ``LastCheckpoint``'s ``dirpath`` (when None: ``<run folder>/checkpoints``)
derive from it, so ``--trainer.default_root_dir=elsewhere`` moves all three. Either may still be set explicitly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jsonargparse import Namespace
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.cli import LightningCLI
from typing_extensions import override

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIG_FLAGS = ("--config", "-c")
UNSET_SAVE_DIRS = (None, ".")  # a logger's save_dir left at its default (WandbLogger: ".")


def available_configs() -> list[str]:
    """The project's stage configs, as names that ``--config`` accepts (``stage_*.yaml``, then presets' overrides)."""
    return sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("stage_*.yaml"))


def resolve_config(value: str) -> str:
    """A ``--config`` value: itself if it is a file (or not a YAML name), else the project config of that name.

    Raises:
        FileNotFoundError: a ``.yaml``/``.yml`` name that is neither a file here nor a project config.
    """
    if not value.endswith((".yaml", ".yml")) or Path(value).is_file():
        return value
    packaged = CONFIG_DIR / value
    if packaged.is_file():
        return str(packaged)
    raise FileNotFoundError(
        f"config {value!r}: no such file in {os.getcwd()} nor in the project's configs/ ({CONFIG_DIR}). "
        f"Available stage configs: {', '.join(available_configs())}"
    )


def resolve_config_args(args: list[str]) -> list[str]:
    """Command-line arguments with every ``--config``/``-c`` value passed through ``resolve_config``."""
    out = list(args)
    for i, arg in enumerate(out):
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_FLAGS and eq:
            out[i] = f"{flag}={resolve_config(value)}"
        elif arg in CONFIG_FLAGS and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
    return out


def derive_run_paths(trainer: Namespace) -> None:
    """The loggers' unset ``save_dir`` := the run folder ``trainer.default_root_dir`` (in place, before instantiation).

    ``LastCheckpoint`` derives its own ``dirpath`` (``<run folder>/checkpoints``) when it is None.
    """
    root = trainer.get("default_root_dir")
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if root and init_args is not None and "save_dir" in init_args and init_args.save_dir in UNSET_SAVE_DIRS:
            init_args.save_dir = root


class StageCLI(LightningCLI):
    """LightningCLI that resolves the project's config names and derives folders from the run folder.

    ``--config`` values may name the project's configs (``resolve_config``); the run folder gives the logger's and
    the checkpoint's folders (``derive_run_paths``).
    """

    @override
    def before_instantiate_classes(self) -> None:
        derive_run_paths((self.config[self.subcommand] if self.subcommand else self.config).trainer)

    @override
    def parse_arguments(self, parser, args) -> None:
        if isinstance(args, dict) or hasattr(args, "as_dict"):  # a dict / Namespace, not command-line strings
            return super().parse_arguments(parser, args)
        try:
            args = resolve_config_args(sys.argv[1:] if args is None else list(args))
        except FileNotFoundError as err:
            parser.error(str(err))
        self.config = parser.parse_args(args)

    def _parse_ckpt_path(self) -> None:
        """Refuse a ``--ckpt_path`` of another stage (or an unreadable file) before anything runs.

        ``--ckpt_path`` resumes the *same* stage: LightningCLI rebuilds the model from the checkpoint's own class and
        settings, so another stage's checkpoint would silently train that stage.
        """
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            from lightning_mp3d.checkpoints import read_checkpoint

            try:
                saved = read_checkpoint(ckpt_path, "--ckpt_path").get("hyper_parameters", {}).get("_class_path")
            except ValueError as err:
                self.parser.error(str(err))
            wanted = self.config[subcommand].get("model", {}).get("class_path")
            if saved and wanted and saved != wanted:
                self.parser.error(
                    f"--ckpt_path {ckpt_path!r} is a checkpoint of {saved}, but this config trains {wanted}. "
                    "--ckpt_path resumes the same stage; to start this stage from that checkpoint, drop --ckpt_path "
                    f"and set --model.init_args.init_from={ckpt_path}"
                )
        super()._parse_ckpt_path()


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Run (or, with ``run=False``, only build) the LightningCLI. ``args`` defaults to ``sys.argv[1:]``.

    A run closes its W&B run before returning (``finish_wandb``), failed runs with exit code 1.
    """
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        cli = StageCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    if run:
        finish_wandb()
    return cli


def finish_wandb(exit_code: int = 0) -> None:
    """Finish this process's W&B run, if one was started (rank 0), so its history, summary and files are written now.

    Left to the interpreter's exit, an offline run was abandoned half-written (``HandleAbandonedError``).

    ``wandb.teardown`` then stops W&B's service process, which flushes the run file: right after ``finish`` alone its
    exit record was missing from disk in 2 of 12 offline runs (the next run starts a new service, about a second).
    """
    wandb = sys.modules.get("wandb")  # never import wandb just to find that nothing was logged
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)
        wandb.teardown()


def main() -> None:
    """Console-script entry (``lightning``, ``lightning-mp3d``): exits 0 on success, unlike returning the CLI object."""
    cli_main()


if __name__ == "__main__":
    main()
