"""The two training pathways of the cross-modal student stages, as methods that return losses.

``CrossModalPathways`` is mixed into ``systems.common.CrossModalStage``, which builds what the pathways read: the
frozen teacher {E, F} (``teacher``), G (``g``, None in the warm-up), H (``h``), M with the frozen Psi
(``scene_decoder``), the spatial-transform generator (``_generator``) and the hyper-parameters. The D_I pathway
(``distill_losses`` / ``ss_losses``) distils from the teacher's people or asks for equivariance; the D_syn pathway
(``recon_losses``, ``adapt_loss``) auto-encodes m_syn through G, H and M. The stages choose which losses each
optimizer steps (``with_root``) and log them (``log_losses``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.callbacks.step_logs import logs_this_step
from lightning_mp3d.geometry import pixel_to_grid
from lightning_mp3d.grouping import GroupedPeople
from lightning_mp3d.losses.cross_modal import (
    adaptation_loss,
    distillation_loss,
    reconstruction_terms,
    root_heatmap_loss,
    self_supervised_loss,
    supervised_2d_loss,
    supervised_3d_loss,
    transformed_roots,
)
from lightning_mp3d.models.scene_decoder import DecodedScene
from lightning_mp3d.models.student import OUTPUT_GRID
from lightning_mp3d.roots import root_heatmap_targets, unique_root_mask
from lightning_mp3d.transforms import random_spatial_transform, warp_images


class ImageTargets(NamedTuple):
    """What the frozen teacher says about a batch of images (no gradient)."""

    v: torch.Tensor  # (B, C_v, 28, 28)
    people: GroupedPeople
    cells: torch.Tensor  # (B, P, 2) long root cells of the teacher's people
    mask: torch.Tensor  # (B, P) bool, at most one person per cell


def _detach_depth(s: torch.Tensor) -> torch.Tensor:
    """The scene map ``s`` with its depth channel (the last) cut from the graph."""
    return torch.cat((s[:, :-1], s[:, -1:].detach()), 1)


class CrossModalPathways:
    """Loss pathways of ``CrossModalStage`` (a mixin: it reads the stage's modules, hyper-parameters and logger)."""

    @property
    def recon_weights(self) -> dict[str, float]:
        """The reconstruction terms of L_recon (D_syn) and L_3D (Ours-Fs): ``recon_terms``, or the paper's L1 alone."""
        return self.hparams.recon_terms or {"recon": 1.0}

    @torch.no_grad()
    def teacher_targets(self, images: torch.Tensor) -> ImageTargets:
        """Compute v = E(I) and the teacher's people k_hat_q, with one person per root cell.

        The people come from ``Teacher.group``, the same as ``teacher.grouped(images)``, which the report scores.
        """
        v = self.teacher.encode(images)
        people = self.teacher.group(v, **(self.hparams.grouping or {}))
        cells = pixel_to_grid(people.roots_px, OUTPUT_GRID, images.shape[-1])
        score = (people.confidence * (people.confidence > 0)).sum(-1)
        return ImageTargets(v, people, cells, unique_root_mask(cells, people.mask, score))

    def root_loss(self, s: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Focal loss of the root channel against Gaussian targets at ``cells``."""
        target = root_heatmap_targets(cells, mask, s.shape[-1], self.hparams.root_sigma)
        return root_heatmap_loss(s[:, 0], target)

    def distill_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Image pathway of the warm-up and phase 1: L_distl, root loss (teacher roots), optional L_2D/L_3D."""
        images = batch["image"]
        t = self.teacher_targets(images)
        s = self.h(self.image_input(t.v))
        scene = self.scene_decoder(s, t.cells, t.mask, t.people.roots_px)
        losses = {
            "distl": distillation_loss(scene.keypoints, t.people.keypoints, t.people.confidence, t.mask),
            "root_image": self.root_loss(s, t.cells, t.mask),
        }
        losses.update(self.supervised_losses(s, batch))
        return losses

    def supervised_losses(self, s: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """L_2D / L_3D on D_I with its GT, only when switched on (weak / full supervision)."""
        if not (self.hparams.use_weak_2d or self.hparams.use_full_3d):
            return {}
        gt = self.scene_decoder(s, batch["root_cells"], batch["mask"], batch["roots_px"])
        out = {}
        if self.hparams.use_weak_2d:
            out["sup_2d"] = supervised_2d_loss(gt.keypoints, batch["joints_2d"], batch["visibility"], batch["mask"])
        if self.hparams.use_full_3d:
            out["sup_3d"] = supervised_3d_loss(gt, batch, self.recon_weights)
        return out

    def syn_scene(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, DecodedScene]:
        """v~ = G(m_syn), s = H(v~), P_tilde = M(s) at the true roots."""
        v = self.g(batch["maps"])
        s = self.h(v)
        return v, s, self.scene_decoder(s, batch["root_cells"], batch["mask"], batch["roots_px"])

    def recon_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Auto-encoding pathway: the reconstruction terms and the root loss at the true roots.

        The terms are summed as ``recon``, and each is also logged as ``term_<name>``.
        """
        _, s, scene = self.syn_scene(batch)
        terms = reconstruction_terms(scene, batch, self.recon_weights)
        return {
            "recon": sum(terms.values()),
            **{f"term_{k}": v.detach() for k, v in terms.items()},
            "root_syn": self.root_loss(s, batch["root_cells"], batch["mask"]),
        }

    def adapt_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_adapt = |F(G(m_syn)) - m_syn| (gradient reaches G only; F is frozen)."""
        heatmaps, pafs = self.teacher.decode(self.g(batch["maps"]))
        return adaptation_loss(heatmaps, pafs, batch["maps"])

    def ss_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """L_ss on (I, T_s(I)) at the teacher's roots of I (moved by T_s for I'), plus the root loss on I."""
        images = batch["image"]
        t = self.teacher_targets(images)
        transform = random_spatial_transform(images.shape[0], self._generator).to(images.dtype, images.device)
        with torch.no_grad():  # E is frozen: nothing upstream of v' trains
            v_prime = self.teacher.encode(warp_images(images, transform).clamp(0, 1))
        s, s_prime = self.h(self.image_input(t.v)), self.h(self.image_input(v_prime))
        if self.hparams.ss_detach_depth:  # L_ss can shrink every 2D pose onto its root by pushing the depth away
            s, s_prime = _detach_depth(s), _detach_depth(s_prime)
        scene = self.scene_decoder(s, t.cells, t.mask, t.people.roots_px)
        roots_px, cells, mask = transformed_roots(t.people.roots_px, t.mask, transform, s.shape[-1], images.shape[-1])
        scene_prime = self.scene_decoder(s_prime, cells, mask, roots_px)
        losses = {
            "ss": self_supervised_loss(
                scene.keypoints,
                scene_prime.keypoints,
                transform,
                mask,
                images.shape[-1],
                scene.depth,
                scene_prime.depth,
            ),  # fmt: skip
            "root_image": self.root_loss(s, t.cells, t.mask),
        }
        losses.update(self.supervised_losses(s, batch))
        return losses

    def with_root(self, main: torch.Tensor, losses: dict[str, torch.Tensor], key: str) -> torch.Tensor:
        """Total loss: ``main + root_weight * losses[key]`` + any switched-on supervised losses."""
        total = main + self.hparams.root_weight * losses[key]
        for extra in ("sup_2d", "sup_3d"):
            if extra in losses:
                total = total + losses[extra]
        return total

    def log_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log every loss as ``train/loss_<name>`` on the steps Lightning writes (``callbacks/step_logs.py``)."""
        if not logs_this_step(self):  # Lightning would not write them (callbacks/step_logs.py)
            return
        self.log_dict({f"train/loss_{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
