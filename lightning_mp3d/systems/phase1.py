"""Stage 3: phase-1 cross-modal alignment (paper 3.2). G and H with L_recon, L_distl and L_adapt, one Adam each.

Each step gets ``{"syn": D_syn batch, "image": D_I batch}`` (``CrossModalDataModule``) and runs two paper iterations:
the auto-encoding pathway on ``batch["syn"]`` (L_recon on G and H, then L_adapt on G through the frozen F), then the
distillation pathway on ``batch["image"]`` (L_distl on H). Root-heatmap losses ride with L_recon (true roots) and
L_distl (teacher roots). ``use_recon`` / ``use_adapt`` switch losses off for the Table 2 ablation.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from lightning_mp3d.systems.common import CrossModalStage

RECON, DISTL, ADAPT = 0, 1, 2


class Phase1Alignment(CrossModalStage):
    """G and H; optimizers 0 = L_recon (G, H), 1 = L_distl (H), 2 = L_adapt (G).

    Switches ``use_recon``/``use_adapt``/``use_ss`` and all other arguments: see ``CrossModalStage``.
    """

    stage_name = "phase1"
    init_stage = "distill"
    init_modules = ("h",)
    uses_g = True

    @override
    def configure_optimizers(self) -> Any:
        g, h = list(self.g.parameters()), list(self.h.parameters())
        return [self.loss_optimizer(g + h), self.loss_optimizer(h), self.loss_optimizer(g)]

    @override
    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        syn, images = batch["syn"], batch["image"]
        losses: dict[str, torch.Tensor] = {}
        if self.hparams.use_recon:
            losses.update(self.recon_losses(syn))
            self.run_optimizer(RECON, self.with_root(losses["recon"], losses, "root_syn"))
        if self.hparams.use_adapt:
            losses["adapt"] = self.adapt_loss(syn)
            self.run_optimizer(ADAPT, losses["adapt"])
        self.log_losses(losses, syn["maps"].shape[0])
        self.step_schedulers()  # paper iteration 2k (D_syn) done

        losses = self.distill_losses(images)
        self.run_optimizer(DISTL, self.with_root(losses["distl"], losses, "root_image"))
        self.log_losses(losses, images["image"].shape[0])
        self.step_schedulers()  # paper iteration 2k + 1 (D_I) done
