"""Stage 0 end to end: `lightning fit --config configs/stage_teacher.yaml` (fast_dev_run) and load_teacher on it."""

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_mp3d.models.teacher import load_teacher

ROOT = Path(__file__).resolve().parent.parent


def test_stage_teacher_fast_dev_run_through_the_lightning_command(tmp_path):
    exe = shutil.which("lightning", path=str(Path(sys.executable).parent))
    assert exe is not None
    run = tmp_path / "runs" / "teacher"
    cmd = [
        exe, "fit", "--config", str(ROOT / "configs" / "stage_teacher.yaml"),
        "--config", str(ROOT / "configs" / "tiny" / "stage_teacher.yaml"),
        "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={run}",
        "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.callbacks.init_args.dirpath", str(run / "checkpoints"),
        "--data.init_args.batch_size=2", "--data.init_args.val_size=2", "--model.init_args.num_figure_images=1",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    pngs = list(run.rglob("val_teacher_step*.png"))
    assert pngs, "no validation figure was written"


@pytest.mark.parametrize("norm", [False, True])
def test_trained_checkpoint_loads_as_a_frozen_teacher(tmp_path, norm):
    from pytorch_lightning import Trainer
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_mp3d.datamodules.images import ImageDataModule
    from lightning_mp3d.systems.teacher import TeacherPretraining

    model = TeacherPretraining(
        width=0.0625,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        num_figure_images=0,
        norm=norm,
        peak_threshold=0.2,
        paf_min_dot=0.01,
    )
    data = ImageDataModule(style="source", batch_size=2, batches_per_epoch=1, val_size=2)
    trainer = Trainer(
        max_steps=1, num_sanity_val_steps=0, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
        accelerator="cpu",
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0)],
    )  # fmt: skip
    trainer.fit(model, data)
    assert {"val/source/pck2d", "val/target/pck2d", "val/source/mpjpe2d", "val/target/loss"} <= set(
        trainer.callback_metrics
    )
    teacher = load_teacher(tmp_path / "checkpoints" / "last.ckpt")
    assert teacher.frozen and teacher.v_channels == model.teacher.v_channels
    assert teacher.norm == norm
    assert teacher.grouping_kwargs == {"peak_threshold": 0.2, "min_dot": 0.01}  # the grouping the stage validated with
    for a, b in zip(teacher.state_dict().values(), model.teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b.detach().cpu())  # parameters and, with norm, BatchNorm's running statistics
