"""Stage 0 ``teacher``: trains the embedded teacher {E, F} on the source image domain (2D labels only).

Run with ``lightning fit --config configs/stage_teacher.yaml``; later stages get the frozen teacher with
``lightning_mp3d.models.teacher.load_teacher("runs/teacher/checkpoints/last.ckpt")``, which rebuilds it from the
checkpoint's stage record (``checkpoints``).

Loss: Cao et al.'s heatmap + PAF L2 regression on both stages' outputs (intermediate supervision); targets are
``synth.maps.render_maps`` of the batch's ``joints_2d`` / ``mask`` (and ``visibility`` when ``use_visibility``).
Validation on each of the datamodule's held-out sets (``val_styles``, e.g. source and target): PAF grouping of the
teacher's maps, then 2D-PCK at 25 px and 2D-MPJPE (``metrics.PCK2D``) as ``val/<style>/pck2d``,
``val/<style>/pck2d_matched``, ``val/<style>/mpjpe2d``, the regression loss as ``val/<style>/loss``, and a PNG of
predicted maps and skeletons (``val/<style>/teacher``). The source-target gap is the teacher's dataset bias.
"""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from typing_extensions import override

from lightning_mp3d.callbacks.step_logs import logs_this_step
from lightning_mp3d.checkpoints import add_stage_record
from lightning_mp3d.losses.teacher import teacher_loss
from lightning_mp3d.metrics import PCK2D, MatchSpec, PeopleBatch
from lightning_mp3d.models.teacher import EmbeddedTeacher
from lightning_mp3d.synth.maps import render_maps
from lightning_mp3d.systems.media import log_figure
from lightning_mp3d.systems.optim import store_callables
from lightning_mp3d.visualize import teacher_figure


class TeacherPretraining(LightningModule):
    """Stage 0: the embedded teacher trained on source-domain renders.

    Args:
        width: width multiplier of the OpenPose-family teacher (1.0 = OpenPose widths).
        optimizer: builds the teacher's optimizer, e.g. ``class_path: torch.optim.Adam, init_args: {lr: 1.0e-4}``.
        lr_scheduler: builds its schedule, stepped every optimizer step (None: a constant rate), e.g.
            ``torch.optim.lr_scheduler.MultiStepLR`` with ``milestones: [80000], gamma: 0.1``.
        sigma_px: target heatmap Gaussian sigma, pixels (as ``render_maps``).
        paf_width_px: target PAF half-width, pixels (as ``render_maps``).
        use_visibility: render targets only for visible joints (False: every joint of every person is labelled,
            occluded ones included).
        peak_threshold: heatmap peak threshold of the grouping used in validation (and stored for ``load_teacher``).
        paf_min_dot: the grouping's PAF support threshold (``EmbeddedTeacher``'s; stored likewise): 0.05 is Cao et
            al.'s, for PAFs of unit length.
        pck_threshold_px: 2D-PCK threshold (25 px in the paper).
        match_threshold_px: per-joint box half-size of the MuPoTS-style person matching on 224 px images.
        num_figure_images: images per validation set in the logged figure (0: none).
        norm: BatchNorm after every hidden convolution of the teacher (our addition, off in OpenPose; Lightweight
            OpenPose has it): the tiny from-scratch teacher reaches 2D-PCK 37% instead of 30% on source in 800 steps.
            Under DDP each process normalises with its own batch statistics (no SyncBatchNorm).
        side_weight: weight of the left/right difference in the L2 loss (``losses.teacher.teacher_loss``; 1: Cao et
            al.'s loss, our addition).
    """

    def __init__(
        self,
        width: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        sigma_px: float = 7.0,
        paf_width_px: float = 8.0,
        use_visibility: bool = False,
        peak_threshold: float = 0.1,
        paf_min_dot: float = 0.05,
        pck_threshold_px: float = 25.0,
        match_threshold_px: float = 25.0,
        num_figure_images: int = 4,
        norm: bool = False,
        side_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler  # the callables (LightningCLI's hparams: config)
        store_callables(self.hparams, "optimizer", "lr_scheduler")  # weights-only checkpoints can hold them
        self.teacher = EmbeddedTeacher(width=width, peak_threshold=peak_threshold, norm=norm, paf_min_dot=paf_min_dot)
        self.val_names: list[str] = ["source", "target"]
        self.val_pck = nn.ModuleDict()
        self._figure_batches: dict[str, dict[str, torch.Tensor]] = {}

    @override
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.val_names = list(getattr(dm, "val_styles", self.val_names))
        for name in self.val_names:
            if name not in self.val_pck:
                self.val_pck[name] = PCK2D(
                    threshold_px=self.hparams.pck_threshold_px,
                    match=MatchSpec(threshold_px=self.hparams.match_threshold_px),
                )

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rendered heatmap + PAF targets (B, 43, 28, 28) of a batch's 2D labels."""
        vis = batch["visibility"] if self.hparams.use_visibility else None
        return render_maps(
            batch["joints_2d"], batch["mask"], visibility=vis, sigma_px=self.hparams.sigma_px,
            paf_width_px=self.hparams.paf_width_px,
        )  # fmt: skip

    def _loss(self, batch: dict[str, torch.Tensor]):
        out = self.teacher.stages(batch["image"])
        maps = self.targets(batch)
        loss = teacher_loss(
            (out.heatmap1, out.heatmap2), (out.paf1, out.paf2), maps, side_weight=self.hparams.side_weight
        )
        return loss, out

    @override
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        if not logs_this_step(self):  # Lightning would not write them (callbacks/step_logs.py)
            return loss.total
        b = batch["image"].shape[0]
        self.log("train/loss", loss.total, prog_bar=True, batch_size=b)
        lr = self.optimizers().param_groups[0]["lr"]
        self.log_dict({"train/loss_heatmap": loss.heatmap, "train/loss_paf": loss.paf, "train/lr": lr}, batch_size=b)
        return loss.total

    @override
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.val_names[dataloader_idx] if dataloader_idx < len(self.val_names) else f"set{dataloader_idx}"
        loss, out = self._loss(batch)
        self.log(f"val/{name}/loss", loss.total, batch_size=batch["image"].shape[0], add_dataloader_idx=False)
        people = self.teacher.grouped(batch["image"])
        self.val_pck[name].update(
            PeopleBatch(None, people.keypoints, people.mask, None, batch["joints_2d"], batch["mask"])
        )
        if batch_idx == 0 and self.hparams.num_figure_images > 0:
            n = self.hparams.num_figure_images
            self._figure_batches[name] = {
                "image": batch["image"][:n], "heatmaps": out.heatmap2[:n], "pafs": out.paf2[:n],
                "keypoints": people.keypoints[:n], "confidence": people.confidence[:n], "mask": people.mask[:n],
                "gt": batch["joints_2d"][:n], "gt_mask": batch["mask"][:n],
            }  # fmt: skip

    @override
    def on_validation_epoch_end(self) -> None:
        for name in self.val_names:
            metric = self.val_pck[name]
            if not metric.update_called:
                continue
            result = metric.compute()
            self.log_dict(
                {
                    f"val/{name}/pck2d": result.pck_all.float(),
                    f"val/{name}/pck2d_matched": result.pck_matched.float(),
                    f"val/{name}/mpjpe2d": result.mpjpe_2d.float(),
                },
                add_dataloader_idx=False,
            )
            metric.reset()
        if self._figure_batches:
            log_figure(self, "val/teacher", teacher_figure(self._figure_batches))
            self._figure_batches = {}

    @override
    def configure_optimizers(self):
        opt = self.optimizer(self.teacher.parameters())
        if self.lr_scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.lr_scheduler(opt), "interval": "step"}}

    @override
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        hp = self.hparams
        args = {
            "width": float(hp.width),
            "peak_threshold": float(hp.peak_threshold),
            "norm": bool(hp.get("norm")),
            "paf_min_dot": float(hp.paf_min_dot),
        }
        add_stage_record(checkpoint, self._trainer, "teacher", {"teacher": args})
