"""The frozen teacher {E, F}: ``encode(I) -> v``, ``decode(v) -> (heatmaps, pafs)`` and PAF grouping.

Two implementations of :class:`Teacher`:

- :class:`EmbeddedTeacher`: the OpenPose body model family with a width multiplier, trained by stage 0 natively
  in our order (L2 branch = 15 joint heatmaps, L1 branch = 14 limbs x 2 PAF channels), so its map is identity.
- :class:`OpenPoseTeacher`: the OpenPose body model (loads the port's ``body_pose_model.pth``); its COCO-18 /
  19-limb outputs are mapped to our 15 joints / 14 limbs (see :func:`coco_to_ours_maps`).

The feature v (both the paper's C_v = 1024 and the 128 backbone channels): v = concat(stage-1 L1 conv5_4 (c5),
stage-1 L2 conv5_4 (c5), conv4_4_CPM (c4)) on the 28x28 grid, so ``v_channels = 2 c5 + c4`` (OpenPose: 1152).
F runs conv5_5 of both branches and stage 2 on concat(L1 out, L2 out, v[:, 2 c5:]) exactly as OpenPose, so
``decode(encode(I))`` is the network's stage-2 output. Heatmaps/PAFs use the layout of ``synth.maps.render_maps``
(heatmap j at channel j, limb k = ``skeleton.LIMBS[k]`` at PAF channels 2k (x) and 2k + 1 (y)).

Images are (B, 3, 224, 224) RGB in [0, 1]; ``encode`` normalises them as the port does (``img / 256 - 0.5`` for
``img`` in 0..255, i.e. ``x * 255 / 256 - 0.5``); the OpenPose teacher also swaps RGB to the BGR order its
Caffe weights expect. Pure tensor code: no Lightning import.
"""

from __future__ import annotations

import abc
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from lightning_mp3d.grouping import GroupedPeople, assemble, find_peaks, group_people, select_people
from lightning_mp3d.models.openpose import PoseMachine, PoseMachineOutput, load_openpose_state_dict
from lightning_mp3d.skeleton import COCO18_TO_OURS, JOINT_INDEX, NUM_JOINTS, NUM_LIMBS, ROOT

IMAGE_SIZE = 224
GRID_SIZE = 28


def normalize_images(images: torch.Tensor, bgr: bool = False) -> torch.Tensor:
    """RGB images in [0, 1] -> the port's input ``img / 256 - 0.5`` (``img`` in 0..255), optionally BGR."""
    if images.ndim != 4 or images.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE) or not images.is_floating_point():
        raise ValueError(
            f"images must be float (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) in [0, 1], got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    x = images.flip(1) if bgr else images
    return x * (255.0 / 256.0) - 0.5


class Teacher(nn.Module, abc.ABC):
    """Abstract base class of the frozen teacher {E, F}.

    Subclasses set ``v_channels`` and implement :meth:`encode` and :meth:`decode`.
    """

    v_channels: int
    image_size: int = IMAGE_SIZE
    grid_size: int = GRID_SIZE

    def __init__(self) -> None:
        super().__init__()
        self._frozen = False
        self.grouping_kwargs: dict[str, float] = {}

    @abc.abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """E: images (B, 3, 224, 224) float in [0, 1] -> v (B, C_v, 28, 28)."""

    @abc.abstractmethod
    def decode(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F: v (B, C_v, 28, 28) -> (heatmaps (B, 15, 28, 28), pafs (B, 28, 28, 28)) in our order."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F(E(images)): (heatmaps (B, 15, 28, 28), pafs (B, 28, 28, 28))."""
        return self.decode(self.encode(images))

    def grouped(self, images: torch.Tensor, **kwargs: float) -> GroupedPeople:
        """People in each image: :meth:`group` of ``E(images)``; ``kwargs`` override ``grouping_kwargs``."""
        return self.group(self.encode(images), **kwargs)

    def group(self, v: torch.Tensor, **kwargs: float) -> GroupedPeople:
        """The teacher's people k_hat_q from v = E(I): PAF grouping of F(v) in our joint order.

        The one grouping of a teacher: the student stages distil from it and the report scores it (via
        :meth:`grouped`). ``kwargs`` override ``grouping_kwargs``.
        """
        heatmaps, pafs = self.decode(v)
        return group_people(heatmaps, pafs, image_size=self.image_size, **{**self.grouping_kwargs, **kwargs})

    def _check_v(self, v: torch.Tensor) -> None:
        if v.ndim != 4 or v.shape[1] != self.v_channels:
            raise ValueError(f"v must be (B, {self.v_channels}, H, W), got {tuple(v.shape)}")

    def freeze(self) -> Teacher:
        """Eval mode and no gradients for every parameter; stays in eval when a parent calls ``.train()``."""
        self._frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    @property
    def frozen(self) -> bool:
        """True after :meth:`freeze`."""
        return self._frozen

    def train(self, mode: bool = True) -> Teacher:
        """Like ``nn.Module.train`` but a frozen teacher always stays in eval mode."""
        return super().train(mode and not self._frozen)


class EmbeddedTeacher(Teacher):
    """The OpenPose family at width ``width``, trained natively in our joint/limb order (identity map).

    Args:
        width: width multiplier of every hidden layer (1.0 = OpenPose widths).
        peak_threshold: default heatmap peak threshold of :meth:`grouped`.
        norm: BatchNorm after every hidden convolution (``PoseMachine``'s ``norm``; our addition).
        paf_min_dot: default ``min_dot`` of :meth:`grouped` (``grouping.group_people``): the PAF component along a
            candidate limb above which a sample supports it. Cao et al.'s 0.05 suits PAFs of unit length; a small
            teacher's PAFs can be far shorter (the tiny one's forearms: 0.01), and then no limb of theirs passes.
    """

    def __init__(
        self, width: float = 0.125, peak_threshold: float = 0.1, norm: bool = False, paf_min_dot: float = 0.05
    ) -> None:
        super().__init__()
        self.net = PoseMachine(width, paf_channels=2 * NUM_LIMBS, heatmap_channels=NUM_JOINTS, norm=norm)
        self.width = float(width)
        self.norm = bool(norm)
        self.v_channels = 2 * self.net.branch_channels + self.net.backbone_channels
        self.grouping_kwargs = {"peak_threshold": peak_threshold, "min_dot": paf_min_dot}

    def stages(self, images: torch.Tensor) -> PoseMachineOutput:
        """Both stages' outputs (for intermediate supervision): heatmaps (B, 15, 28, 28), PAFs (B, 28, 28, 28)."""
        return self.net(normalize_images(images))

    @override
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.encode(normalize_images(images))

    @override
    def decode(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_v(v)
        return self.net.decode(v)


# OpenPose COCO-18 limbs (the port's limbSeq, 0-based) and their PAF channels (the port's mapIdx - 19).
COCO_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
COCO_PAF_CHANNELS: tuple[tuple[int, int], ...] = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11),
    (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
)  # fmt: skip
COCO_TREE = 17  # the first 17 limbs form a tree rooted at the neck; the last two (ear-shoulder) are redundant
COCO_NECK, COCO_NOSE, COCO_R_HIP, COCO_L_HIP = 1, 0, 8, 11
COCO_FACE = (0, 14, 15, 16, 17)  # nose, eyes, ears
HEAD_TOP_EXTRAPOLATION = 1.4  # head top = neck + 1.4 (face centre - neck)
# Our limb k -> the COCO limb with the same ends (None: derived, see coco_to_ours_maps).
_OUR_LIMB_FROM_COCO: tuple[int | None, ...] = (None, 12, 0, 1, 2, 4, 3, 5, None, None, 7, 10, 8, 11)


def _unit_field(x: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Rescale a (B, 2, H, W) field to ``magnitude`` (B, 1, H, W) along its direction (0 where it vanishes)."""
    norm = x.norm(dim=1, keepdim=True)
    return torch.where(norm > 1e-6, x / norm.clamp_min(1e-6) * magnitude, torch.zeros_like(x))


def coco_to_ours_maps(heatmaps: torch.Tensor, pafs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenPose maps (COCO-18 + background heatmaps, 19-limb PAFs) -> our 15 heatmaps and 14 limb PAFs.

    Derived channels:
    - pelvis heatmap = sqrt(r_hip * l_hip): for Gaussians of equal sigma this is a Gaussian of that sigma at the
      hip midpoint, scaled by exp(-|r_hip - l_hip|^2 / (8 sigma^2)).
    - head-top heatmap = max of the nose, eye and ear heatmaps (the face; the head top lies about a face
      height above, under a cell or two on the 28 grid at typical scales).
    - PAF neck -> head = PAF neck -> nose.
    - PAF pelvis -> neck = -(PAF neck -> r_hip + PAF neck -> l_hip), rescaled to the larger of the two magnitudes.
    - PAF pelvis -> r_hip = direction of (A(neck -> r_hip) - A(neck -> l_hip)), A = 5x5 average pool (the
      difference of the two unit hip directions points from the left to the right hip when both are about as far
      from the neck), magnitude sqrt(|A r| |A l|); pelvis -> l_hip is its negation.

    Args:
        heatmaps: (B, 19, G, G) OpenPose's COCO-18 + background heatmaps.
        pafs: (B, 38, G, G) its 19 limb PAFs (x, y).

    Returns:
        (heatmaps (B, 15, G, G), pafs (B, 28, G, G)).
    """
    if heatmaps.ndim != 4 or heatmaps.shape[1] != 19 or pafs.shape[1:2] != (38,):
        raise ValueError(
            f"expected OpenPose maps (B, 19, G, G) and (B, 38, G, G), got {tuple(heatmaps.shape)} "
            f"and {tuple(pafs.shape)}"
        )
    idx = torch.tensor([max(i, 0) for i in COCO18_TO_OURS], device=heatmaps.device)
    hm = heatmaps.index_select(1, idx).clone()
    hm[:, ROOT] = (heatmaps[:, COCO_R_HIP].clamp_min(0) * heatmaps[:, COCO_L_HIP].clamp_min(0)).sqrt()
    hm[:, JOINT_INDEX["head"]] = heatmaps[:, list(COCO_FACE)].amax(1)
    limb = [pafs[:, list(c)] for c in COCO_PAF_CHANNELS]
    out = [limb[src] for src in _OUR_LIMB_FROM_COCO if src is not None]
    nr, nl = limb[6], limb[9]  # neck -> r_hip, neck -> l_hip
    up = _unit_field(-(nr + nl), torch.maximum(nr.norm(dim=1, keepdim=True), nl.norm(dim=1, keepdim=True)))
    ar, al = F.avg_pool2d(nr, 5, 1, 2), F.avg_pool2d(nl, 5, 1, 2)
    side = _unit_field(ar - al, (ar.norm(dim=1, keepdim=True) * al.norm(dim=1, keepdim=True)).sqrt())
    out.insert(0, up)
    out.insert(8, side)
    out.insert(9, -side)
    return hm, torch.cat(out, 1)


def coco_to_ours_people(keypoints: torch.Tensor, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped COCO-18 people -> our 15 joints.

    Pelvis = midpoint of the hips (confidence sqrt of theirs; missing unless both hips are present). Head top =
    neck + 1.4 (face centre - neck), face centre = mean of the present nose/eyes/ears (confidence min(neck,
    max face); missing without the neck or any face point).

    Args:
        keypoints: (..., 18, 2) COCO-18 joints.
        confidence: (..., 18), 0 = missing.

    Returns:
        (keypoints (..., 15, 2), confidence (..., 15)).
    """
    idx = torch.tensor([max(i, 0) for i in COCO18_TO_OURS], device=keypoints.device)
    kp = keypoints.index_select(-2, idx).clone()
    conf = confidence.index_select(-1, idx).clone()
    cr, cl = confidence[..., COCO_R_HIP], confidence[..., COCO_L_HIP]
    kp[..., ROOT, :] = 0.5 * (keypoints[..., COCO_R_HIP, :] + keypoints[..., COCO_L_HIP, :])
    conf[..., ROOT] = torch.where((cr > 0) & (cl > 0), (cr * cl).sqrt(), torch.zeros_like(cr))
    face_c = confidence[..., list(COCO_FACE)]  # (..., 5)
    w = (face_c > 0).to(keypoints.dtype)
    face = (keypoints[..., list(COCO_FACE), :] * w[..., None]).sum(-2) / w.sum(-1, keepdim=True).clamp_min(1)
    neck = keypoints[..., COCO_NECK, :]
    head = JOINT_INDEX["head"]
    kp[..., head, :] = neck + HEAD_TOP_EXTRAPOLATION * (face - neck)
    ok = (confidence[..., COCO_NECK] > 0) & (w.sum(-1) > 0)
    conf[..., head] = torch.where(ok, torch.minimum(confidence[..., COCO_NECK], face_c.amax(-1)), 0.0)
    kp = torch.where(conf[..., None] > 0, kp, torch.zeros_like(kp))
    return kp, conf


class OpenPoseTeacher(Teacher):
    """The OpenPose body model (VGG19 + CPM stages 1-2) as the teacher, outputs mapped to our skeleton.

    Args:
        weights: optional path to the port's ``body_pose_model.pth`` (or a state dict), loaded strictly.
        peak_threshold: default heatmap peak threshold of :meth:`grouped` (the port uses 0.1).
    """

    def __init__(self, weights: str | Path | dict | None = None, peak_threshold: float = 0.1) -> None:
        super().__init__()
        self.net = PoseMachine(1.0)
        self.v_channels = 2 * self.net.branch_channels + self.net.backbone_channels  # 1152
        self.grouping_kwargs = {"peak_threshold": peak_threshold}
        if weights is not None:
            load_openpose_state_dict(self.net, weights)

    @override
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.encode(normalize_images(images, bgr=True))

    def decode_coco(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F in OpenPose's own order: (heatmaps (B, 19, 28, 28), pafs (B, 38, 28, 28)) = stage-2 output."""
        self._check_v(v)
        return self.net.decode(v)

    @override
    def decode(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return coco_to_ours_maps(*self.decode_coco(v))

    def group(self, v: torch.Tensor, **kwargs: float) -> GroupedPeople:
        """Cao et al.'s grouping in COCO space (the 17 tree limbs, rooted at the neck), then mapped to ours.

        Not the grouping of the mapped maps (:meth:`decode`, whose pelvis heatmap and pelvis PAFs are heuristics):
        the people come from OpenPose's own COCO maps and only the grouped joints are mapped.
        """
        opts = {"peak_threshold": 0.1, "max_people": 8, "max_peaks": 16, "min_joints": 3, **self.grouping_kwargs}
        opts.update(kwargs)
        heatmaps, pafs = self.decode_coco(v)
        peaks = find_peaks(heatmaps[:, :18], threshold=opts.pop("peak_threshold"), max_peaks=int(opts.pop("max_peaks")))
        max_people, min_joints = int(opts.pop("max_people")), int(opts.pop("min_joints"))
        asm = assemble(peaks, pafs, COCO_LIMBS[:COCO_TREE], COCO_PAF_CHANNELS[:COCO_TREE], COCO_NECK, **opts)
        kp, conf = coco_to_ours_people(asm.keypoints * (self.image_size / heatmaps.shape[-1]), asm.confidence)
        fallback = (JOINT_INDEX["r_hip"], JOINT_INDEX["l_hip"])
        return select_people(kp, conf, root=ROOT, fallback=fallback, min_joints=min_joints, max_people=max_people)


def load_teacher(path: str | Path, **kwargs: float) -> Teacher:
    """A frozen teacher from a stage-0 checkpoint (``.ckpt``) or OpenPose weights (a path ending in ``.pth``).

    Args:
        path: ``runs/teacher/checkpoints/last.ckpt`` (a :class:`TeacherPretraining` checkpoint) or the port's
            ``body_pose_model.pth``.
        **kwargs: passed to the teacher's constructor (e.g. ``peak_threshold``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a teacher checkpoint / OpenPose state dict, or its weights are not finite.
    """
    from lightning_mp3d import checkpoints

    if Path(path).suffix == ".pth":
        return OpenPoseTeacher(path, **kwargs).freeze()
    ckpt = checkpoints.read(path, expect_stage="teacher", what="teacher checkpoint")
    checkpoints.require_finite(ckpt.state_dict, path)  # a diverged teacher would make every later stage learn from NaN
    return ckpt.build(EmbeddedTeacher, "teacher", **kwargs).freeze()
