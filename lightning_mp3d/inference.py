"""The inference model P̂ = M ∘ H ∘ E(I): images -> people with camera-centric 3D joints, 2D joints and root confidence.

Roots come from NMS on H's root heatmap (the grouping's peak finder, ``roots.find_roots``), refined below the 16-pixel
cell by the confidence-weighted centroid of the 3x3 neighbourhood (a peak between two cells lands between them), then M
decodes each root: pool phi, c, d at the root cell -> frozen Ψ -> FK -> T_R -> T_G -> P̂, and T_K -> 2D.

``PoseEstimator.from_stage_checkpoint(path)`` rebuilds it from a distill/phase1/phase2/refine checkpoint: H from the
checkpoint, the frozen teacher E and Ψ from the checkpoints that stage names (overridable); a student trained with
``h_input: maps`` reads G(F(E(I))) instead of E(I), with G from its checkpoint.

Two-stage refinement (paper 4.3, Fig. 6; ``refine=True``, a refine-stage checkpoint): stage 1 above is the person
detector; every detected person is cropped (``crops.person_crops``: centred at its root, zoomed by its depth), all crops
of a batch go through E and H' in one call, and M decodes H' at the crop's root cell in the crop's virtual camera,
mapped back to the image's camera (``refine_people``). Rule: each person's root-relative pose is H''s; the root pixel
is stage 1's (crops are centred on it, so H' never learns to move it); the root depth is H''s where H''s root
probability at that cell reaches the threshold (H' sees a person's root there), else stage 1's.

Throughput (issue 15, ``benchmarks/bench_inference.py``): the whole batch stays on the device, with fixed shapes (K
slots, masks instead of ``nonzero``) and no host synchronisation (no ``.item()``/``.tolist()``) until
``prediction_records``, the one transfer that turns a batch into JSON-ready people. Options, each measured by the
benchmark (``benchmarks/results/bench_inference.json``): ``channels_last`` (E and H in NHWC; on by default: 1.3-1.8x
end to end on this project's CPU for both model sizes at batch 1 and 32, numerically the same),
``amp_dtype=torch.bfloat16`` (E and H under autocast, M in float32: 1.2-1.9x on a CPU with AVX512-BF16, but it changes
the numbers and is slow on CPUs without bf16, so off), ``compile_decoder`` (``torch.compile`` of NMS + M, whose few
hundred small ops are ~10% of the tiny model's batch-1 time on a CPU; off: a one-off compile of 10-60 s), and
``CUDAGraphEstimator`` (a captured replay of the whole forward for one input shape, GPU only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from lightning_mp3d.crops import DEFAULT_CROP_DEPTH_MM, crop_images, person_crops, to_crop_pixels, to_image_camera
from lightning_mp3d.geometry import pixel_to_grid, project
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import ROOT_CHANNEL, PoseMapEncoder, SceneHead, TeacherMapsInput
from lightning_mp3d.roots import find_roots


class Prediction(NamedTuple):
    """People found per image, ``K = max_people`` slots padded with mask False."""

    poses: torch.Tensor  # (B, K, 15, 3) camera-centric mm
    keypoints: torch.Tensor  # (B, K, 15, 2) px in the input image
    confidence: torch.Tensor  # (B, K) root probability
    mask: torch.Tensor  # (B, K) bool
    roots_px: torch.Tensor  # (B, K, 2) px


def decode_people(
    s: torch.Tensor, scene_decoder: SceneDecoder, threshold: float = 0.3, max_people: int = 8, subcell: bool = True
) -> Prediction:
    """Root NMS on s's heatmap (optionally refined below the cell), then M at those roots.

    Args:
        s: (B, 40, G, G) output of H.
        scene_decoder: M.
        threshold: minimum root probability of a person (``roots.find_roots``).
        max_people: K, slots per image.
        subcell: sub-cell root pixels (the 3x3 centroid, ``peaks.subcell_offsets``) instead of cell centres.
    """
    size = scene_decoder.image_size
    roots = find_roots(s[:, ROOT_CHANNEL], threshold, max_people, size, subcell=subcell)
    scene = scene_decoder(s, roots.cells, roots.mask, roots.roots_px.to(s.dtype))
    return Prediction(scene.poses, scene.keypoints, roots.confidence, roots.mask, roots.roots_px)


def refine_people(
    images: torch.Tensor,
    stage1: Prediction,
    encoder: nn.Module,
    refine_head: SceneHead,
    scene_decoder: SceneDecoder,
    threshold: float = 0.3,
    crop_depth_mm: float = DEFAULT_CROP_DEPTH_MM,
) -> Prediction:
    """Stage 2 of the two-stage refinement: every person of ``stage1`` re-estimated by H' on its crop.

    One E and one H' call for all crops of the batch. The rule for each person (module header): root-relative pose
    from H'; root pixel from stage 1; root depth from H' where its root probability at the crop's root cell is at
    least ``threshold``, else from stage 1. Slots without a person are returned unchanged.

    Args:
        images: (B, 3, W, W) the stage-1 input.
        stage1: stage 1's people on ``images``.
        encoder: E (``encode``).
        refine_head: H'.
        scene_decoder: M (its ``image_size`` is the crops' side).
        threshold: minimum root probability of H' at the crop's root cell for its root depth to replace stage 1's.
        crop_depth_mm: crop zoom (``crops.person_crops``; the refine stage's setting).
    """
    size = scene_decoder.image_size  # a Python int, also when traced
    crops = person_crops(stage1.roots_px, stage1.poses[..., 0, 2], stage1.mask, crop_depth_mm, size)
    s = refine_head(encoder.encode(crop_images(images, crops)))  # (N, 40, G, G)
    roots_px = to_crop_pixels(stage1.roots_px[crops.image, crops.slot][:, None], crops)  # (N, 1, 2) the crop centre
    cells = pixel_to_grid(roots_px, s.shape[-1], size)
    scene = scene_decoder(s, cells, torch.ones_like(cells[..., 0], dtype=torch.bool), roots_px.to(s.dtype))
    poses = to_image_camera(scene.poses, crops)  # (N, 1, J, 3) in the image's camera, root pixel = stage 1's
    confident = (torch.sigmoid(scene.root_logit) >= threshold)[..., None, None]  # (N, 1, 1, 1)
    root = torch.where(confident, poses[..., :1, :], stage1.poses[crops.image, crops.slot][:, None, :1])
    refined = stage1.poses.clone()
    refined[crops.image, crops.slot] = (poses - poses[..., :1, :] + root)[:, 0]
    return stage1._replace(poses=refined, keypoints=project(refined, scene_decoder.intrinsics))


class PoseEstimator(nn.Module):
    """E -> H -> root NMS -> M, optionally followed by the two-stage refinement H' (``refine_people``).

    Args:
        encoder: the frozen teacher (its ``encode`` is E), or ``models.student.TeacherMapsInput`` (G(F(E(I))), a
            student trained with ``h_input: maps``).
        head: H.
        scene_decoder: M with the frozen Ψ.
        threshold: minimum root probability of a person.
        max_people: K, slots per image.
        subcell: sub-cell root refinement (off: roots at cell centres, as the paper's NMS).
        refine_head: H' of a refine-stage checkpoint (None: single-shot only).
        refine: run the two-stage refinement (needs ``refine_head``).
        crop_depth_mm: crop zoom of the refinement (``crops.person_crops``; the refine stage's setting).
        channels_last: E, H (and H') in channels_last memory format (converted in place) and images made so.
        amp_dtype: autocast dtype of E and H (e.g. ``torch.bfloat16``); None: float32.
        compile_decoder: ``torch.compile`` NMS + M (fixed shapes, one graph).
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: SceneHead,
        scene_decoder: SceneDecoder,
        threshold: float = 0.3,
        max_people: int = 8,
        subcell: bool = True,
        refine_head: SceneHead | None = None,
        refine: bool = False,
        crop_depth_mm: float = DEFAULT_CROP_DEPTH_MM,
        channels_last: bool = True,
        amp_dtype: torch.dtype | None = None,
        compile_decoder: bool = False,
    ) -> None:
        super().__init__()
        if refine and refine_head is None:
            raise ValueError("refine=True needs H' (refine_head): build the estimator from a refine-stage checkpoint")
        self.encoder, self.head, self.scene_decoder, self.refine_head = encoder, head, scene_decoder, refine_head
        self.threshold, self.max_people, self.subcell = threshold, max_people, subcell
        self.refine, self.crop_depth_mm = refine, crop_depth_mm
        self.image_size = scene_decoder.image_size
        self.channels_last, self.amp_dtype = channels_last, amp_dtype
        self._decode = torch.compile(decode_people, dynamic=False) if compile_decoder else decode_people
        if channels_last:
            for net in (encoder, head, refine_head):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        self.eval().requires_grad_(False)

    def scene(self, images: torch.Tensor) -> torch.Tensor:
        """The raw network E -> H: images (B, 3, W, W) -> s (B, 40, G, G) float32 (with this estimator's options)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            return self.head(self.encoder.encode(images))
        with torch.autocast(images.device.type, dtype=self.amp_dtype):
            return self.head(self.encoder.encode(images)).float()

    def forward(self, images: torch.Tensor) -> Prediction:
        """Images (B, 3, 224, 224) in [0, 1] -> Prediction."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != self.image_size:
            raise ValueError(f"images must be (B, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
        s = self.scene(images)  # (B, 40, 14, 14)
        people = self._decode(s, self.scene_decoder, self.threshold, self.max_people, self.subcell)
        if not self.refine:
            return people
        return refine_people(
            images, people, self.encoder, self.refine_head, self.scene_decoder, self.threshold, self.crop_depth_mm
        )

    @classmethod
    def from_stage_checkpoint(
        cls,
        path: str | Path,
        teacher_checkpoint: str | Path | None = None,
        aae_checkpoint: str | Path | None = None,
        **kwargs: Any,
    ) -> PoseEstimator:
        """Rebuild the estimator from a distill/phase1/phase2/refine checkpoint.

        A refine checkpoint holds stage 1's H (``detector.*``) and H' (``h.*``): single-shot by default, the two-stage
        refinement with ``refine=True``.

        Args:
            path: the student stage's checkpoint (e.g. ``runs/phase2/checkpoints/last.ckpt``).
            teacher_checkpoint: overrides the teacher checkpoint the stage recorded.
            aae_checkpoint: overrides the AAE checkpoint the stage recorded.
            kwargs: ``threshold``, ``max_people``, ``subcell``, ``refine`` and the speed options (``channels_last``,
                ``amp_dtype``, ``compile_decoder``).
        """
        from lightning_mp3d import checkpoints
        from lightning_mp3d.models.aae import load_pose_decoder
        from lightning_mp3d.models.teacher import load_teacher

        ckpt = checkpoints.read(path, expect_stage=checkpoints.STUDENT_STAGES, what="stage checkpoint")
        checkpoints.require_finite(ckpt.state_dict, path)
        frozen = {}
        for name, given in (("teacher", teacher_checkpoint), ("aae", aae_checkpoint)):
            frozen[name] = Path(given) if given else ckpt.upstream.get(name)
            if given and not frozen[name].is_file():
                raise FileNotFoundError(f"{name} checkpoint {str(given)!r} does not exist")
            if frozen[name] is None or not frozen[name].is_file():
                raise FileNotFoundError(
                    f"{str(path)!r} was trained with the {name} checkpoint {str(frozen[name])!r}, which does not "
                    f"exist; pass its location ({name}_checkpoint=..., mp3d-predict --{name}-checkpoint)"
                )
        teacher = load_teacher(frozen["teacher"]).freeze()
        decoder = SceneDecoder(load_pose_decoder(frozen["aae"]), **ckpt.models["scene_decoder"])
        two_stage = ckpt.stage == "refine"  # stage 1's H is "detector.*", H' is "h.*"
        if kwargs.get("refine") and not two_stage:
            raise ValueError(f"{str(path)!r} is a '{ckpt.stage}' checkpoint, which has no H'; refine=True needs "
                             "the refine stage's checkpoint (runs/refine/checkpoints/last.ckpt)")  # fmt: skip
        if ckpt.models["h"]["v_channels"] != teacher.v_channels:
            raise ValueError(
                f"{str(path)!r}: H was trained on C_v={ckpt.models['h']['v_channels']}, the teacher "
                f"{str(frozen['teacher'])!r} has C_v={teacher.v_channels} (another teacher than the one it was "
                "trained with?)"
            )
        head = ckpt.build(SceneHead, "detector" if two_stage else "h")
        hp = ckpt.hparams  # inference settings, not sub-model arguments
        encoder = teacher
        if hp.get("h_input", "v") == "maps":  # H reads G(F(E(I))) (``models.student.TeacherMapsInput``)
            encoder = TeacherMapsInput(teacher, ckpt.build(PoseMapEncoder, "g"))
        kwargs.setdefault("threshold", hp.get("root_threshold", 0.3))
        kwargs.setdefault("max_people", hp.get("max_people", 8))
        if two_stage:
            kwargs.setdefault("crop_depth_mm", hp.get("crop_depth_mm", DEFAULT_CROP_DEPTH_MM))
        return cls(encoder, head, decoder, refine_head=ckpt.build(SceneHead, "h") if two_stage else None, **kwargs)


def prediction_records(
    prediction: Prediction, transforms: torch.Tensor | None = None, decimals: tuple[int, int, int] = (1, 2, 4)
) -> list[list[dict[str, Any]]]:
    """JSON-ready people of a batch: the one host transfer (and synchronisation) of the inference path.

    Args:
        prediction: a batch's Prediction (any device).
        transforms: optional (B, 3) (scale, offset_x, offset_y) per image mapping input pixels to the original image
            (``datamodules.images.fit_image``); None keeps the 2D joints in input pixels.
        decimals: rounding of the 3D joints (mm), 2D joints (px) and root confidence.

    Returns:
        Per image, its people (slots with mask True, by descending confidence): ``{"root_confidence": float,
        "joints_3d_mm": 15 x [x, y, z], "joints_2d_px": 15 x [u, v]}``.
    """
    keypoints = prediction.keypoints
    if transforms is not None:
        t = transforms.to(keypoints)
        keypoints = keypoints * t[:, None, None, :1] + t[:, None, None, 1:]  # datamodules.images.to_original_pixels
    host = [x.detach().to("cpu", torch.float64) for x in (prediction.poses, keypoints, prediction.confidence)]
    poses, keypoints, confidence = (torch.round(x, decimals=d).tolist() for x, d in zip(host, decimals, strict=True))
    mask = prediction.mask.cpu().tolist()
    return [
        [
            {"root_confidence": c, "joints_3d_mm": p, "joints_2d_px": k}
            for c, p, k, m in zip(conf_i, poses_i, kp_i, mask_i, strict=True)
            if m
        ]
        for conf_i, poses_i, kp_i, mask_i in zip(confidence, poses, keypoints, mask, strict=True)
    ]


class CUDAGraphEstimator:
    """A PoseEstimator's forward captured as a CUDA graph for one input shape and replayed (GPU, batch-1 latency).

    The graph replays the kernels recorded at capture on static buffers: each call copies ``images`` into the static
    input, replays, and returns a Prediction of clones of the static outputs. Same options as the estimator
    (``amp_dtype``, ``channels_last``); ``refine=True`` is refused (its crop count depends on the detections).

    Args:
        estimator: on a CUDA device, in eval mode.
        batch_size: B of the captured shape; other shapes raise.
        warmup: eager calls on a side stream before capture (cuDNN autotuning, lazy init).
    """

    def __init__(self, estimator: PoseEstimator, batch_size: int = 1, warmup: int = 3) -> None:
        device = next(estimator.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"CUDAGraphEstimator needs the estimator on a CUDA device, got {device}")
        if estimator.refine:
            raise ValueError("CUDAGraphEstimator captures the single-shot forward; refine=True has dynamic shapes")
        size = estimator.image_size
        self.estimator, self.shape = estimator, (batch_size, 3, size, size)
        self.static_input = torch.zeros(self.shape, device=device)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(warmup):
                estimator(self.static_input)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.static_output = estimator(self.static_input)

    def __call__(self, images: torch.Tensor) -> Prediction:
        """Replay the captured graph on ``images`` (B, 3, W, W) of the captured shape; the outputs are copies."""
        if tuple(images.shape) != self.shape:
            raise ValueError(f"this graph was captured for images of shape {self.shape}, got {tuple(images.shape)}")
        self.static_input.copy_(images)
        self.graph.replay()
        return Prediction(*(x.clone() for x in self.static_output))


__all__ = [
    "CUDAGraphEstimator",
    "PoseEstimator",
    "Prediction",
    "decode_people",
    "prediction_records",
    "refine_people",
]
