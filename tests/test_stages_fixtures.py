"""Helpers (no tests) shared by the stage tests: tiny teacher/AAE checkpoints in their stages' exact formats, and
small in-process runs of the student stages through the ``lightning`` CLI entry (``cli_main``)."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_mp3d.checkpoints import STAGE_KEY, stage_record
from lightning_mp3d.cli import cli_main
from lightning_mp3d.models.aae import PoseDecoder
from lightning_mp3d.models.teacher import EmbeddedTeacher

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEACHER_WIDTH = 0.0625


def make_frozen_checkpoints(folder: Path) -> tuple[Path, Path]:
    """Write a stage-0 teacher checkpoint (``teacher.*`` weights) and an AAE checkpoint (``pose_decoder.*``), each with
    the stage record its stage writes (``checkpoints.stage_record``)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    teacher = EmbeddedTeacher(width=TEACHER_WIDTH)
    teacher_path = folder / "teacher.ckpt"
    torch.save(
        {
            "state_dict": {f"teacher.{k}": v for k, v in teacher.state_dict().items()},
            STAGE_KEY: stage_record("teacher", {"teacher": {"width": TEACHER_WIDTH, "peak_threshold": 0.1}}),
        },
        teacher_path,
    )
    decoder = PoseDecoder(width=32, depth=2)
    aae_path = folder / "aae.ckpt"
    torch.save(
        {
            "state_dict": {f"pose_decoder.{k}": v for k, v in decoder.state_dict().items()},
            STAGE_KEY: stage_record("aae", {"pose_decoder": decoder.config}),
        },
        aae_path,
    )
    return teacher_path, aae_path


def stage_args(
    stage: str, root: Path, teacher: Path, aae: Path, *extra: str, init_from: Path | None = None
) -> list[str]:
    """CLI arguments for a very small run of a student stage writing to ``root/<stage>``."""
    args = [
        "fit",
        f"--config={CONFIGS / f'stage_{stage}.yaml'}",
        f"--config={CONFIGS / 'tiny' / f'stage_{stage}.yaml'}",
        f"--model.init_args.teacher_checkpoint={teacher}",
        f"--model.init_args.aae_checkpoint={aae}",
        "--model.init_args.g_hidden=8",
        "--model.init_args.h_width=8",
        "--model.init_args.h_fc_channels=8",
        "--model.init_args.val_figures=false",
        f"--trainer.default_root_dir={root / stage}",
        f"--trainer.callbacks.init_args.dirpath={root / stage / 'checkpoints'}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.limit_val_batches=1",
    ]
    args.append(f"--model.init_args.init_from={init_from if init_from is not None else 'null'}")
    if stage == "distill":
        args += ["--data.init_args.batch_size=2", "--data.init_args.val_size=2", "--data.init_args.batches_per_epoch=4"]
    else:
        args += [  # 2 steps per epoch, each a D_syn and a D_I batch
            "--data.init_args.batches_per_epoch=2",
            "--data.init_args.syn={batch_size: 2}",
            "--data.init_args.images={batch_size: 2, val_size: 2}",
        ]
    return args + list(extra)


def run_stage(stage: str, root: Path, teacher: Path, aae: Path, *extra: str, init_from: Path | None = None):
    """Run ``lightning fit`` in-process; returns the LightningCLI (``.model``, ``.trainer``)."""
    return cli_main(stage_args(stage, root, teacher, aae, *extra, init_from=init_from))


def student_state(module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter of a module."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    """True if any tensor differs."""
    return any(not torch.equal(before[k], after[k]) for k in before)
