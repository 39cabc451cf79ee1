"""Stage 5: two-stage refinement H' (paper 4.3, Fig. 6, suppl. 2). H' (H's architecture) trained on person crops.

Stage 1 is the frozen phase-2 student used as a person detector (``detector``); each person is cropped
(``crops.person_crops``: centred at the root, zoomed so that it looks as large as a person ``crop_depth_mm`` away) and
passed through the whole pipeline again, E -> H' -> M, where M reads H' in the crop's virtual camera, mapped back to
the image's camera by ``crops.to_image_camera``. H' starts from phase 2's H and learns phase 2's loss families on
crops, one Adam each, with phase 2's CombinedLoader (each step a D_syn then a D_I batch, two paper iterations):

- D_syn pathway: one crop per true person (true root, true depth); its m_syn is rendered from the scene's joints
  mapped into the crop (every person the crop shows), its ground truth moved into the crop's virtual camera
  (``crops.to_crop_camera``, the exact inverse of the mapping back); L_recon (``recon_terms``) through the frozen G,
  and the root loss at the roots inside the crop (``CrossModalStage.recon_losses`` unchanged).
- D_I pathway: one crop per teacher person (the teacher's root pixel; the depth is stage 1's at that root, the
  teacher being 2D-only); L_ss and the root loss on the crops (``CrossModalStage.ss_losses`` unchanged: the teacher
  finds the people of each crop); with ``use_weak_2d``/``use_full_3d``, L_2D/L_3D against the image's ground truth
  moved into each crop.

Modules: ``h`` is H' (the head this stage trains, as in every stage), ``detector`` stage 1's H, ``g`` phase 2's G
(both frozen); all three are in the checkpoint, so ``PoseEstimator.from_stage_checkpoint`` runs either mode from it.
G, H and H' are built with the arguments phase 2's checkpoint records (its stage record, ``checkpoints``), whatever
the config says. Validation scores the two-stage prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from typing_extensions import override

from lightning_mp3d import checkpoints
from lightning_mp3d.crops import (
    DEFAULT_CROP_DEPTH_MM,
    PersonCrops,
    crop_images,
    person_crops,
    to_crop_camera,
    to_crop_pixels,
)
from lightning_mp3d.datamodules.streams import batch_seed
from lightning_mp3d.geometry import pixel_to_grid
from lightning_mp3d.inference import Prediction, decode_people, refine_people
from lightning_mp3d.models.student import OUTPUT_GRID, SceneHead
from lightning_mp3d.roots import unique_root_mask
from lightning_mp3d.synth.maps import render_maps
from lightning_mp3d.systems.common import CrossModalStage
from lightning_mp3d.transforms import inside_image

RECON, SS = 0, 1


class Refinement(CrossModalStage):
    """H' only (G and stage 1's H frozen from phase 2); optimizers 0 = L_recon on D_syn crops, 1 = L_ss on D_I crops.

    Args:
        crop_depth_mm: crop zoom (``crops.person_crops``); 4.5 m: a crop shows its person at a size the single-shot
            model saw often (the embedded scenes' people stand 3 to 7.5 m away). At 3 m, the nearest of them, H' (which
            starts as H) sees every person at the edge of what H learned and is 28-38 mm worse than phase 2 (see
            ``crops.DEFAULT_CROP_DEPTH_MM``).
        kwargs: see ``CrossModalStage`` (``use_recon``, ``use_ss``, ``use_weak_2d``, ``use_full_3d``, ...).
    """

    stage_name = "refine"
    init_stage = "phase2"
    init_modules = ("g", "h")
    uses_g = True

    def __init__(self, crop_depth_mm: float = DEFAULT_CROP_DEPTH_MM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if crop_depth_mm <= 0:
            raise ValueError(f"crop_depth_mm must be positive, got {crop_depth_mm}")
        self.detector: SceneHead | None = None

    # ------------------------------------------------------------------------------------------------ building
    def build(self) -> None:
        """As the other stages, with the architecture of ``init_from`` (phase 2), plus the frozen detector."""
        if self.h is not None:
            return
        super().build()
        self.detector = SceneHead(**self.model_args["detector"])
        self.freeze_fixed_parts()

    def sub_model_args(self, v_channels: int) -> dict[str, dict[str, Any]]:
        """G, H and M as ``init_from`` (phase 2) records them, whatever the config says; the detector is H."""
        args = super().sub_model_args(v_channels)
        init_from = self.hparams.init_from
        if init_from and Path(init_from).is_file():
            recorded = checkpoints.read(init_from, expect_stage=self.init_stage, what="init_from").models
            for name in ("g", "h", "scene_decoder"):
                if recorded[name] != args[name]:
                    rank_zero_info(f"refine: {name} {recorded[name]} from {init_from} (config: {args[name]})")
                    args[name] = recorded[name]
        return {**args, "detector": dict(args["h"])}

    @override
    def frozen_modules(self) -> list[torch.nn.Module]:
        return super().frozen_modules() + [m for m in (self.g, self.detector) if m is not None]

    def load_previous_stage(self, path: str | Path) -> None:
        """G and H from phase 2; H' (``h``) and stage 1 (``detector``) both start as phase 2's H."""
        super().load_previous_stage(path)
        self.detector.load_state_dict(self.h.state_dict())

    @override
    def configure_optimizers(self) -> Any:
        h = list(self.h.parameters())
        return [self.loss_optimizer(h), self.loss_optimizer(h)]

    # ------------------------------------------------------------------------------------------------ crops
    def crop_targets(self, batch: dict[str, torch.Tensor], crops: PersonCrops) -> dict[str, torch.Tensor]:
        """The ground truth of each crop's image, moved into the crop.

        Every person whose root lies inside it (one per root cell, the cropped person first), 3D in the crop's virtual
        camera, 2D in crop pixels.
        """
        size = crops.image_size
        poses = to_crop_camera(batch["poses"][crops.image], crops)  # (N, P, J, 3)
        roots_px = to_crop_pixels(batch["roots_px"][crops.image], crops)  # (N, P, 2)
        cells = pixel_to_grid(roots_px, OUTPUT_GRID, size)
        own = torch.arange(roots_px.shape[1], device=cells.device)[None] == crops.slot[:, None]  # (N, P)
        mask = unique_root_mask(cells, batch["mask"][crops.image] & inside_image(roots_px, size), own.float())
        out = {
            "poses": poses,
            "depth": poses[..., 0, 2],
            "roots_px": roots_px,
            "root_cells": cells,
            "mask": mask,
            "joints_2d": to_crop_pixels(batch["joints_2d"][crops.image], crops),
        }
        out.update({k: batch[k][crops.image] for k in ("canonical", "rotation", "visibility") if k in batch})
        return out

    def syn_crops(self, syn: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A D_syn batch -> one D_syn-like batch of crops, one per true person, with m_syn rendered for each crop."""
        crops = person_crops(syn["roots_px"], syn["depth"], syn["mask"], self.hparams.crop_depth_mm)
        out = self.crop_targets(syn, crops)
        # the maps show every person of the scene (also those whose root lies outside the crop)
        out["maps"] = render_maps(
            out["joints_2d"], syn["mask"][crops.image], image_size=crops.image_size, grid_size=syn["maps"].shape[-1]
        )
        return out

    def image_crops(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A D_I batch -> crops of the teacher's people (root depth from stage 1).

        The GT is moved into the crops when a supervised switch needs it.
        """
        images = batch["image"]
        with torch.no_grad():
            t = self.teacher_targets(images)
            depth = self.scene_decoder(self.detector(self.image_input(t.v)), t.cells, t.mask, t.people.roots_px).depth
        crops = person_crops(t.people.roots_px, depth, t.mask, self.hparams.crop_depth_mm, images.shape[-1])
        out = {"image": crop_images(images, crops)}
        if self.hparams.use_weak_2d or self.hparams.use_full_3d:
            out.update(self.crop_targets(batch, crops))
        return out

    # ------------------------------------------------------------------------------------------------ training
    @override
    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        syn = self.syn_crops(batch["syn"]) if self.hparams.use_recon else None
        if syn is not None and len(syn["maps"]):  # a batch without people has nothing to crop
            losses = self.recon_losses(syn)
            self.run_optimizer(RECON, self.with_root(losses["recon"], losses, "root_syn"))
            self.log_losses(losses, syn["maps"].shape[0])
        self.step_schedulers()  # paper iteration 2k (D_syn) done

        self._generator.manual_seed(batch_seed(self.hparams.transform_seed, self.global_rank, self.global_step))
        images = self.image_crops(batch["image"]) if self.hparams.use_ss else None
        if images is not None and len(images["image"]):  # the teacher found nobody: nothing to crop
            losses = self.ss_losses(images)
            self.run_optimizer(SS, self.with_root(losses["ss"], losses, "root_image"))
            self.log_losses(losses, images["image"].shape[0])
        self.step_schedulers()  # paper iteration 2k + 1 (D_I) done

    # ------------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_people(self, images: torch.Tensor) -> Prediction:
        """Two-stage inference, exactly as ``PoseEstimator(refine=True)``: stage 1 (``detector``), then H' on crops."""
        hp = self.hparams
        encoder = self.image_encoder
        stage1 = decode_people(self.detector(encoder.encode(images)), self.scene_decoder, hp.root_threshold,
                               hp.max_people)  # fmt: skip
        return refine_people(images, stage1, encoder, self.h, self.scene_decoder, hp.root_threshold, hp.crop_depth_mm)
