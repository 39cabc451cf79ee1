"""Stage 2: distillation warm-up. H learns L_distl (+ the root heatmap) from the frozen teacher on D_I images.

Paper suppl. 2.2: "We first pretrain H using L_distl for about 15k iterations before imposing all losses."
One Adam over H; the teacher and Psi are frozen. Data: D_I batches only (``ImageDataModule(style="target")``), a plain
loader; each batch is one paper iteration.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from lightning_mp3d.systems.common import CrossModalStage


class DistillationWarmup(CrossModalStage):
    """H only, L_distl + root loss. Arguments: see ``CrossModalStage``."""

    stage_name = "distill"
    init_stage = None
    uses_g = False

    @override
    def configure_optimizers(self) -> Any:
        return [self.loss_optimizer(list(self.h.parameters()))]

    @override
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        losses = self.distill_losses(batch)
        self.run_optimizer(0, self.with_root(losses["distl"], losses, "root_image"))
        self.log_losses(losses, batch["image"].shape[0])
        self.step_schedulers()
