"""The aae stage end to end in subprocesses: the `lightning` console script and a 2-process CPU DDP run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from lightning_mp3d.models.aae import load_pose_decoder

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        env[key] = str(tmp_path)
    return env


def test_lightning_fit_fast_dev_run_with_default_and_tiny_config(tmp_path):
    exe = shutil.which("lightning", path=str(Path(sys.executable).parent))
    assert exe is not None
    args = [
        exe,
        "fit",
        "--config",
        str(ROOT / "configs/stage_aae.yaml"),
        "--config",
        str(ROOT / "configs/tiny/stage_aae.yaml"),
        "--trainer.fast_dev_run=true",
    ]
    done = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "runs/aae/media").glob("val_prior_poses_step*.png"))


_DDP_SCRIPT = """
import torch
from pytorch_lightning import Trainer, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint
from lightning_mp3d.datamodules.poses import PoseDataModule
from lightning_mp3d.systems.aae import AAEPretraining

seed_everything(0)
torch.set_num_threads(1)
small = {"width": 32, "depth": 1}
model = AAEPretraining(encoder=small, pose_decoder=small, discriminator=small, num_figure_poses=0)
dm = PoseDataModule(batch_size=8, batches_per_epoch=3, val_size=32, val_batch_size=8)
trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", max_steps=9,
                  logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                  callbacks=[ModelCheckpoint(dirpath="ckpt", save_last=True)])
trainer.fit(model, dm)
if trainer.is_global_zero:
    print("DONE", trainer.global_step, trainer.callback_metrics["val/mpjpe_recon"].item(), flush=True)
"""


def test_two_process_cpu_ddp_run_finishes(tmp_path):
    script = tmp_path / "ddp_aae.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DONE 9 " in done.stdout
    decoder = load_pose_decoder(tmp_path / "ckpt/last.ckpt")  # rank 0's checkpoint is a valid AAE checkpoint
    assert decoder(torch.zeros(2, 32)).shape == (2, 15, 3)
