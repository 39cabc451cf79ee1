"""Data-parallel scaling of phase 1: the real stage through ``lightning fit`` on 1 and on N processes.

CPU: gloo DDP (``--trainer.accelerator=cpu --trainer.devices=N``); GPU: NCCL with ``--accelerator gpu``. Each rank
records steps/s (``batches_per_s``; a step is a D_syn and a D_I batch) and samples/s after a warm-up
(lightning_mp3d.callbacks.throughput.ThroughputRecorder); the script prints and saves per-process and total
throughput. Tiny teacher/AAE checkpoints with random weights are made first
(speed does not depend on the weights).

    python benchmarks/bench_ddp.py --devices 1 2 --batches 24 --out benchmarks/results/bench_ddp.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from lightning_mp3d import checkpoints
from lightning_mp3d.models.aae import PoseDecoder
from lightning_mp3d.models.teacher import EmbeddedTeacher

ROOT = Path(__file__).resolve().parents[1]


def untrained_checkpoints(folder: Path, teacher_width: float = 0.0625) -> tuple[Path, Path]:
    """A teacher and an AAE checkpoint with random weights, in their stages' format (``checkpoints.write``)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    teacher = EmbeddedTeacher(width=teacher_width)
    teacher_args = {"width": teacher_width, "peak_threshold": 0.1}
    decoder = PoseDecoder(width=32, depth=2)
    return (
        checkpoints.write(folder / "teacher.ckpt", "teacher", {"teacher": teacher}, {"teacher": teacher_args}),
        checkpoints.write(folder / "aae.ckpt", "aae", {"pose_decoder": decoder}, {"pose_decoder": decoder.config}),
    )


def run(devices: int, batches: int, accelerator: str, work: Path, teacher: Path, aae: Path, batch_size: int) -> dict:
    out = work / f"throughput_{devices}.json"
    steps = max(1, batches // 2)  # each step: one D_syn and one D_I batch
    cmd = [
        sys.executable,
        "-m",
        "lightning_mp3d",
        "fit",
        "--config",
        str(ROOT / "configs" / "stage_phase1.yaml"),
        "--config",
        str(ROOT / "configs" / "tiny" / "stage_phase1.yaml"),
        f"--model.init_args.teacher_checkpoint={teacher}",
        f"--model.init_args.aae_checkpoint={aae}",
        "--model.init_args.init_from=null",
        "--model.init_args.val_figures=false",
        f"--trainer.accelerator={accelerator}",
        f"--trainer.devices={devices}",
        "--trainer.strategy=" + ("ddp_find_unused_parameters_true" if devices > 1 else "auto"),
        "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={steps}",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={work / f'run{devices}'}",
        f"--trainer.callbacks.init_args.dirpath={work / f'run{devices}' / 'checkpoints'}",
        "--trainer.callbacks+=lightning_mp3d.callbacks.throughput.ThroughputRecorder",
        f"--trainer.callbacks.out={out}",
        f"--data.init_args.batches_per_epoch={steps}",
        f"--data.init_args.syn={{batch_size: {batch_size}}}",
        f"--data.init_args.images={{batch_size: {batch_size}, val_size: 0}}",
    ]
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // devices)))
    subprocess.run(cmd, check=True, env=env, cwd=work)
    ranks = [json.loads(p.read_text()) for p in sorted(work.glob(f"throughput_{devices}.rank*.json"))]
    return {
        "devices": devices,
        "per_process": ranks,
        "total_samples_per_s": round(sum(r["samples_per_s"] for r in ranks), 2),
        "total_batches_per_s": round(sum(r["batches_per_s"] for r in ranks), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batches", type=int, default=24, help="D_syn + D_I batches per process (steps = half)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/bench_ddp.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        teacher, aae = untrained_checkpoints(work / "frozen")
        results = [run(d, args.batches, args.accelerator, work, teacher, aae, args.batch_size) for d in args.devices]
    for r in results:
        print(json.dumps(r))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"accelerator": args.accelerator, "cpu_count": os.cpu_count(), "runs": results}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
