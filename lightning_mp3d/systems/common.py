"""Shared machinery of the three cross-modal student stages (distill, phase1, phase2).

``CrossModalStage`` loads the frozen parts (teacher {E, F} and Psi) and builds the student (H, and G where a stage
uses it) in ``setup`` once the teacher's C_v is known, initialises them from the previous stage (``init_from``),
validates on target-domain images with GT, and keeps frozen parts frozen. The two pathways (D_I images and D_syn
maps), methods that return losses, come from ``systems.pathways.CrossModalPathways``. The stage subclasses only choose
optimizers and which losses each steps.

Checkpoints: the frozen teacher and Psi are *not* stored (they come from ``teacher_checkpoint`` and
``aae_checkpoint``); the checkpoint carries the stage record (``checkpoints``: stage, the arguments of G, H and M,
the upstream checkpoints) so the next stage can check it starts from the right one and inference rebuilds H.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from typing_extensions import override

from lightning_mp3d import checkpoints
from lightning_mp3d.callbacks.finite import NonFiniteError
from lightning_mp3d.callbacks.step_logs import logs_this_step
from lightning_mp3d.grouping import GroupedPeople
from lightning_mp3d.inference import Prediction, decode_people
from lightning_mp3d.metrics import PeopleBatch
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import H_INPUTS, PoseMapEncoder, SceneHead, TeacherMapsInput, student_model_args
from lightning_mp3d.systems.optim import store_callables
from lightning_mp3d.systems.pathways import CrossModalPathways

FROZEN_PREFIXES = ("teacher.", "scene_decoder.")


class CrossModalStage(CrossModalPathways, LightningModule):
    """Base of DistillationWarmup, Phase1Alignment and Phase2SelfSupervised.

    Args:
        teacher_checkpoint: stage-0 checkpoint or OpenPose ``.pth`` (``models.teacher.load_teacher``).
        aae_checkpoint: AAE stage checkpoint giving the frozen Psi (``models.aae.load_pose_decoder``).
        init_from: checkpoint of the previous stage (distill -> phase1 -> phase2) to take G/H from; None starts
            from scratch (only sensible for the warm-up).
        g_hidden: hidden channels of G's 7x7 convolutions.
        h_width: channels of H's 14x14 / 7x7 features.
        h_fc_channels: channels of H's channel-wise FC at 7x7 (128 in the paper).
        optimizer: builds each of the stage's per-loss optimizers (one call per loss: phase 1 has three Adams, all
            from this one setting), e.g. ``class_path: torch.optim.Adam, init_args: {lr: 1.0e-4}``.
        lr_scheduler: builds one schedule per optimizer (None: a constant rate), stepped once per paper iteration
            (0-based), e.g. ``torch.optim.lr_scheduler.MultiStepLR`` with ``milestones: [85000], gamma: 0.1``.
            Iterations are batches: in phase 1/2 a step's D_syn pathway is iteration 2k and its D_I pathway 2k + 1.
        depth_scale_mm: d0 of M's depth parameterisation ``d = d0 exp(x)``.
        root_weight: weight of the root-heatmap focal loss added to each pathway's main loss.
        root_sigma: Gaussian width (cells) of the root targets.
        root_threshold: NMS threshold (sigmoid probability) at inference/validation.
        max_people: root slots at inference.
        use_weak_2d: add L_2D against the GT 2D joints of D_I images (Ours-Ws); off for the unsupervised setting.
        use_full_3d: add L_3D against the GT 3D of D_I images (Ours-Fs), with the terms of ``recon_terms``.
        use_recon: phase 1/2: train with L_recon on D_syn batches (ablation switch).
        use_adapt: phase 1: train G with L_adapt on D_syn batches (ablation switch).
        use_ss: phase 2: train H with L_ss on D_I batches (ablation switch).
        grouping: keyword overrides of the teacher's PAF grouping (e.g. peak_threshold).
        val_figures: draw the 3D skeleton / 2D overlay figures at each validation.
        transform_seed: seed of the random spatial transforms (offset by the global rank).
        ss_detach_depth: L_ss sends no gradient into the depth channel. Off in the paper; on, it removes L_ss's
            degenerate minimum (every person pushed far away, so all projected joints collapse onto the root).
        recon_terms: the D_syn pathway's loss terms and weights (``losses.cross_modal.reconstruction_terms``);
            None is the paper's ``{"recon": 1.0}`` (L_recon alone). Our additions: ``recon_rel``, ``log_depth``,
            ``reproj``, ``canonical``, ``rotation``.
        g_options: extra ``PoseMapEncoder`` arguments (our additions ``skip``, ``norm``); None = the paper's G.
        g_lr_scale: G's learning rate relative to ``optimizer``'s (1 in the paper). Below 1 G adapts more slowly than H:
            when both change at the same rate from scratch, H never learns the articulated pose from G's moving output
            (benchmarks/bench_learning.py: canonical error at the mean-pose level with 1, below it with 0.1).
        h_options: extra ``SceneHead`` arguments (our additions ``readout_dilations``, ``window``,
            ``window_channels``, ``norm``); None = the paper's H.
        h_input: what H reads of an image: ``"v"``, the teacher's latent E(I) (the paper), or ``"maps"``, the
            teacher's maps through G, G(F(E(I))) (``models.student.TeacherMapsInput``; our addition), which reads an
            image the way the D_syn pathway reads m_syn. ``"maps"`` needs G, so not in the warm-up; the stages after
            the first one with G must keep it (checked against ``init_from``).
    """

    stage_name = "base"
    init_stage: str | None = None  # stage whose checkpoint init_from must be
    init_modules: tuple[str, ...] = ("h",)  # modules taken from init_from
    uses_g = True

    def __init__(
        self,
        teacher_checkpoint: str = "runs/teacher/checkpoints/last.ckpt",
        aae_checkpoint: str = "runs/aae/checkpoints/last.ckpt",
        init_from: str | None = None,
        g_hidden: int = 256,
        h_width: int = 256,
        h_fc_channels: int = 128,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        depth_scale_mm: float = 5000.0,
        root_weight: float = 1.0,
        root_sigma: float = 0.75,
        root_threshold: float = 0.3,
        max_people: int = 8,
        use_weak_2d: bool = False,
        use_full_3d: bool = False,
        use_recon: bool = True,
        use_adapt: bool = True,
        use_ss: bool = True,
        grouping: dict[str, float] | None = None,
        val_figures: bool = True,
        transform_seed: int = 0,
        ss_detach_depth: bool = False,
        recon_terms: dict[str, float] | None = None,
        g_options: dict[str, Any] | None = None,
        g_lr_scale: float = 1.0,
        h_options: dict[str, Any] | None = None,
        h_input: Literal["v", "maps"] = "v",
    ) -> None:
        super().__init__()
        if h_input not in H_INPUTS or (h_input == "maps" and not self.uses_g):
            raise ValueError(f"h_input must be one of {H_INPUTS} ('maps' only in a stage with G, not "
                             f"'{self.stage_name}'), got {h_input!r}")  # fmt: skip
        self.save_hyperparameters()
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler  # the callables (LightningCLI's hparams: config)
        store_callables(self.hparams, "optimizer", "lr_scheduler")  # weights-only checkpoints can hold them
        self.automatic_optimization = False
        self.strict_loading = False  # the frozen teacher/Psi are not in our checkpoints; checked in on_load
        self.teacher: torch.nn.Module | None = None
        self.scene_decoder: SceneDecoder | None = None
        self.g: PoseMapEncoder | None = None
        self.h: SceneHead | None = None
        self.model_args: dict[str, dict[str, Any]] = {}  # constructor arguments of G, H, M (``build``)
        self._metrics: torch.nn.ModuleDict | None = None
        self._generator: torch.Generator | None = None
        self._figure_done = False

    # ------------------------------------------------------------------------------------------------ building
    def build(self) -> None:
        """Load the frozen teacher and Psi, then create G and H (idempotent)."""
        if self.h is not None:
            return
        from lightning_mp3d.models.aae import load_pose_decoder
        from lightning_mp3d.models.teacher import load_teacher

        hp = self.hparams
        for key in ("teacher_checkpoint", "aae_checkpoint"):
            if not Path(hp[key]).is_file():
                raise FileNotFoundError(
                    f"{key}: no file at {hp[key]!r} (expected the {key.split('_')[0]} stage's checkpoint)"
                )
        self.teacher = load_teacher(hp.teacher_checkpoint).freeze()
        self.model_args = self.sub_model_args(int(self.teacher.v_channels))
        self.scene_decoder = SceneDecoder(load_pose_decoder(hp.aae_checkpoint), **self.model_args["scene_decoder"])
        if self.uses_g:
            self.g = PoseMapEncoder(**self.model_args["g"])
        self.h = SceneHead(**self.model_args["h"])
        self._metrics = _make_metrics()
        self.freeze_fixed_parts()

    @property
    def image_encoder(self) -> torch.nn.Module:
        """Images -> H's input (``encode``): the teacher, or G(F(E(I))) with ``h_input: maps``."""
        return TeacherMapsInput(self.teacher, self.g) if self.hparams.h_input == "maps" else self.teacher

    def image_input(self, v: torch.Tensor) -> torch.Tensor:
        """H's input for images whose teacher latent is ``v`` (G, when used, gets no gradient from this path)."""
        if self.hparams.h_input == "v":
            return v
        with torch.no_grad():
            return self.image_encoder(v)

    def sub_model_args(self, v_channels: int) -> dict[str, dict[str, Any]]:
        """Constructor arguments of G, H and M (less Psi) from the hyper-parameters; the checkpoint records them."""
        return student_model_args(v_channels, self.hparams, g=self.uses_g)

    def freeze_fixed_parts(self) -> None:
        """Teacher and Psi (and G where a stage says so) in eval mode without gradients."""
        for module in self.frozen_modules():
            module.eval()
            module.requires_grad_(False)

    def frozen_modules(self) -> list[torch.nn.Module]:
        """Modules that never train in this stage."""
        return [m for m in (self.teacher, self.scene_decoder) if m is not None]

    def train(self, mode: bool = True) -> CrossModalStage:
        """Like ``nn.Module.train`` but frozen parts stay in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    @override
    def setup(self, stage: str) -> None:
        self.build()
        if stage == "fit" and self.hparams.init_from:
            self.load_previous_stage(self.hparams.init_from)
        rank = self.trainer.global_rank if self._trainer is not None else 0
        self._generator = torch.Generator().manual_seed(int(self.hparams.transform_seed) + 1000 * rank)

    def load_previous_stage(self, path: str | Path) -> None:
        """Take G/H from the previous stage's checkpoint, checking stage, C_v and keys."""
        ckpt = checkpoints.read(path, expect_stage=self.init_stage or checkpoints.STUDENT_STAGES, what="init_from")
        v_channels = ckpt.models["h"].get("v_channels")
        if v_channels != self.teacher.v_channels:
            raise ValueError(
                f"init_from: {str(path)!r} was trained with v_channels={v_channels}, the teacher here has "
                f"{self.teacher.v_channels}"
            )
        previous = ckpt.hparams.get("h_input", "v")
        if "g" in ckpt.models and previous != self.hparams.h_input:
            raise ValueError(
                f"init_from: {str(path)!r} trained H on h_input={previous!r}, this stage has "
                f"h_input={self.hparams.h_input!r} (set model.init_args.h_input={previous})"
            )
        for name in self.init_modules:
            ckpt.load_into(getattr(self, name), name)

    # ------------------------------------------------------------------------------------------------ checkpoints
    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(FROZEN_PREFIXES)
        }
        hp = self.hparams
        upstream = {"teacher": hp.teacher_checkpoint, "aae": hp.aae_checkpoint, "init_from": hp.init_from}
        checkpoints.add_stage_record(checkpoint, self._trainer, self.stage_name, self.model_args, upstream)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(checkpoints.STAGE_KEY, {}).get("stage")
        if saved != self.stage_name:
            raise ValueError(f"resuming '{self.stage_name}' from a '{saved}' checkpoint; use init_from")
        own = {k for k in self.state_dict() if not k.startswith(FROZEN_PREFIXES) and not k.startswith("_metrics")}
        missing = sorted(own - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(f"checkpoint lacks the student weights {missing[:5]}...")

    # ------------------------------------------------------------------------------------------------ optimizers
    def loss_optimizer(self, params: list[torch.nn.Parameter]) -> dict[str, Any]:
        """One loss's ``optimizer`` (H's group, then G's at ``g_lr_scale`` x the rate) and its ``lr_scheduler``."""
        g_ids = {id(p) for p in self.g.parameters()} if self.g is not None else set()
        groups = [
            (1.0, [p for p in params if id(p) not in g_ids]),
            (self.hparams.g_lr_scale, [p for p in params if id(p) in g_ids]),
        ]
        groups = [(scale, group) for scale, group in groups if group]
        opt = self.optimizer([{"params": group} for _, group in groups])
        for param_group, (scale, _) in zip(opt.param_groups, groups):
            param_group["lr"] *= scale
        if self.lr_scheduler is None:
            return {"optimizer": opt}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.lr_scheduler(opt), "interval": "step"}}

    def step_schedulers(self) -> None:
        """One paper iteration passed: step every scheduler (manual optimization never does it for us).

        Schedules count paper iterations: one per D_I batch in the warm-up, and two per step in phase 1/2, which call
        this after the D_syn pathway and again after the D_I pathway, so a drop lands on the same update as in the
        paper's alternation.
        """
        scheds = self.lr_schedulers()
        with warnings.catch_warnings():  # an optimizer idle on this pathway still counts the iteration
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*before.*optimizer.step")
            for sched in scheds if isinstance(scheds, list) else [scheds] if scheds else []:
                sched.step()
        opts = self.optimizers()
        first = opts[0] if isinstance(opts, list) else opts
        if logs_this_step(self):  # Lightning would not write it otherwise (callbacks/step_logs.py)
            self.log("train/lr", first.param_groups[0]["lr"], on_step=True)

    def run_optimizer(self, index: int, loss: torch.Tensor) -> None:
        """Toggle -> backward -> step -> zero_grad -> untoggle for optimizer ``index``.

        A non-finite loss stops the run before the update (``NonFiniteError``), so the weights and ``last.ckpt`` stay
        finite.
        """
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"stage '{self.stage_name}': non-finite loss {loss.item()} for optimizer {index} at step "
                f"{self.global_step}; training stopped before the update (last.ckpt keeps the last finite weights)"
            )
        opts = self.optimizers()
        opt = opts[index] if isinstance(opts, list) else opts
        self.toggle_optimizer(opt)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        opt.zero_grad()
        self.untoggle_optimizer(opt)

    # ------------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_people(self, images: torch.Tensor) -> Prediction:
        """Inference E -> H -> root NMS -> M, exactly as ``inference.PoseEstimator`` (refined roots)."""
        s = self.h(self.image_encoder.encode(images))
        return decode_people(s, self.scene_decoder, self.hparams.root_threshold, self.hparams.max_people)

    # ------------------------------------------------------------------------------------------------ validation
    @override
    def on_validation_epoch_start(self) -> None:
        self._figure_done = False

    @override
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images = batch["image"]
        scene = self.predict_people(images)
        t = self.teacher_targets(images)
        gt = (batch["poses"], batch["joints_2d"], batch["mask"])
        m = self._metrics
        for name in ("pck3d_rel", "pck3d_abs", "mpjpe", "student_pck2d"):
            m[name].update(PeopleBatch(scene.poses, scene.keypoints, scene.mask, *gt))
        teacher_3d = t.people.keypoints.new_zeros(*t.people.keypoints.shape[:-1], 3)
        m["teacher_pck2d"].update(PeopleBatch(teacher_3d, t.people.keypoints, t.people.mask, *gt))
        if self.hparams.val_figures and not self._figure_done and self.trainer.is_global_zero:
            self._figure_done = True
            log_student_figures(self, images, scene, t.people, batch)

    @override
    def on_validation_epoch_end(self) -> None:
        m = self._metrics
        values = {
            "val/pck3d_rel": m["pck3d_rel"].compute().pck_all,
            "val/pck3d_abs": m["pck3d_abs"].compute().pck_all,
            "val/mpjpe": m["mpjpe"].compute().mpjpe,
            "val/student_pck2d": m["student_pck2d"].compute().pck_all,
            "val/teacher_pck2d": m["teacher_pck2d"].compute().pck_all,
        }
        # a metric with nothing to measure (no person matched) is NaN, not a perfect 0
        self.log_dict({k: v.float() for k, v in values.items()}, sync_dist=False)
        for metric in m.values():
            metric.reset()


def _make_metrics() -> torch.nn.ModuleDict:
    from lightning_mp3d.metrics import MATCH_THRESHOLD_PX_224, MPJPE, PCK2D, PCK3D, PCK3D_ABS_THRESHOLD_MM, MatchSpec

    kw = {"match": MatchSpec(threshold_px=MATCH_THRESHOLD_PX_224)}
    return torch.nn.ModuleDict(
        {
            "pck3d_rel": PCK3D(mode="relative", **kw),
            "pck3d_abs": PCK3D(threshold=PCK3D_ABS_THRESHOLD_MM, mode="absolute", **kw),
            "mpjpe": MPJPE(**kw),
            "student_pck2d": PCK2D(**kw),
            "teacher_pck2d": PCK2D(**kw),
        }
    )


def log_student_figures(
    module: LightningModule, images: torch.Tensor, scene: Prediction, teacher: GroupedPeople, batch: dict
) -> None:
    """3D skeletons (prediction vs GT, camera frame) and a 2D overlay (student, teacher, GT) of the first image."""
    from lightning_mp3d.systems.media import log_figure
    from lightning_mp3d.visualize import student_figures

    fig3d, fig2d = student_figures(images, scene, teacher, batch["poses"], batch["joints_2d"], batch["mask"])
    log_figure(module, "val/skeleton_3d", fig3d)
    log_figure(module, "val/overlay_2d", fig2d)
