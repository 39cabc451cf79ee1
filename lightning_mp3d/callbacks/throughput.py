"""Training throughput per process, written as JSON: batches/s and samples/s after a warm-up, per rank.

Add to any stage: ``--trainer.callbacks+=lightning_mp3d.callbacks.throughput.ThroughputRecorder
--trainer.callbacks.out=throughput.json``. Each rank writes ``<out stem>.rank<r>.json`` (see benchmarks/bench_ddp.py).

Why not Lightning's ``ThroughputMonitor`` here: its hooks run on rank 0 only and its ``world/`` figures are rank 0's
times the world size, while bench_ddp.py measures every rank (whether ranks run evenly is what it checks); it reports
to the logger over a sliding window of ``window_size`` batches (100 by default: nothing is logged before batch 100)
instead of one figure after a warm-up, in a file a script reads; and on CUDA it synchronizes after every batch, which
slows the launch-bound batch-8 steps. For live samples/s in a stage's logger it works as it is, counting samples with
this module's ``samples_in_batch``::

    --trainer.callbacks+=pytorch_lightning.callbacks.ThroughputMonitor
    --trainer.callbacks.batch_size_fn=lightning_mp3d.callbacks.throughput.samples_in_batch
    --trainer.callbacks.window_size=20

(logged as ``train/device/samples_per_sec`` and ``train/device/batches_per_sec`` on logging steps once the window is
full, plus rank 0's figures times the world size as ``train/samples_per_sec`` under DDP; it warns once that the stage
has no ``flops_per_batch``). Checked on the tiny aae stage with a CSV logger.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_mp3d.atomic import write_text_atomic


def samples_in_batch(batch: Any) -> int:
    """Samples in a training batch, summed over the sources of a CombinedLoader step.

    A tensor's or a dict's leading size (``image``, ``maps`` or ``poses`` first); a phase-1/2 step counts both its
    D_syn and its D_I batch.
    """
    if isinstance(batch, dict) and batch and all(isinstance(v, dict) for v in batch.values()):
        return sum(samples_in_batch(v) for v in batch.values())  # a CombinedLoader step: the samples of every source
    if isinstance(batch, dict):
        for key in ("image", "maps", "poses"):
            if key in batch:
                return int(batch[key].shape[0])
        return int(next(v.shape[0] for v in batch.values() if hasattr(v, "shape")))
    return int(batch.shape[0]) if hasattr(batch, "shape") else len(batch)


class ThroughputRecorder(Callback):
    """Time training batches after ``warmup`` batches; write per-rank JSON at the end of fit.

    A batch is one training step; a phase-1/2 step holds a D_syn and a D_I batch, and its samples count both.

    Args:
        out: JSON path (the rank is inserted before the suffix).
        warmup: batches not timed (first-iteration allocations, lazy setup).
    """

    def __init__(self, out: str = "throughput.json", warmup: int = 3) -> None:
        self.out, self.warmup = out, warmup
        self.batches = self.samples = 0
        self.start: float | None = None

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self.batches += 1
        if self.batches == self.warmup:
            self.start = time.perf_counter()
        elif self.batches > self.warmup:
            self.samples += samples_in_batch(batch)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.start is None:
            return
        seconds = time.perf_counter() - self.start
        timed = self.batches - self.warmup
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "timed_batches": timed,
            "seconds": round(seconds, 3),
            "batches_per_s": round(timed / seconds, 3),
            "samples_per_s": round(self.samples / seconds, 3),
        }
        path = Path(self.out)
        path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        write_text_atomic(path, json.dumps(record))
