"""Stage 4: phase-2 self-supervision (paper 3.3). H only, G frozen; L_recon on D_syn and L_ss on D_I, one Adam each.

Each step runs the D_syn pathway on ``batch["syn"]`` (L_recon), then the D_I pathway on ``batch["image"]`` (L_ss): two
paper iterations, as in phase 1. L_distl is dropped; the teacher still supplies the roots of I where L_ss (and the
root heatmap loss) are computed. ``use_ss=False`` keeps only L_recon (an ablation row). The random transforms of L_ss
are seeded by (``transform_seed``, rank, step), so a resumed run draws the same ones.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from lightning_mp3d.datamodules.streams import batch_seed
from lightning_mp3d.systems.common import CrossModalStage

RECON, SS = 0, 1


class Phase2SelfSupervised(CrossModalStage):
    """H only (G frozen from phase 1); optimizers 0 = L_recon (H), 1 = L_ss (H).

    Switches ``use_recon``/``use_adapt``/``use_ss`` and all other arguments: see ``CrossModalStage``.
    """

    stage_name = "phase2"
    init_stage = "phase1"
    init_modules = ("g", "h")
    uses_g = True

    @override
    def frozen_modules(self) -> list[torch.nn.Module]:
        return super().frozen_modules() + ([self.g] if self.g is not None else [])

    @override
    def configure_optimizers(self) -> Any:
        h = list(self.h.parameters())
        return [self.loss_optimizer(h), self.loss_optimizer(h)]

    @override
    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        syn, images = batch["syn"], batch["image"]
        if self.hparams.use_recon:
            losses = self.recon_losses(syn)
            self.run_optimizer(RECON, self.with_root(losses["recon"], losses, "root_syn"))
            self.log_losses(losses, syn["maps"].shape[0])
        self.step_schedulers()  # paper iteration 2k (D_syn) done

        if self.hparams.use_ss:
            self._generator.manual_seed(batch_seed(self.hparams.transform_seed, self.global_rank, self.global_step))
            losses = self.ss_losses(images)
            self.run_optimizer(SS, self.with_root(losses["ss"], losses, "root_image"))
            self.log_losses(losses, images["image"].shape[0])
        self.step_schedulers()  # paper iteration 2k + 1 (D_I) done
