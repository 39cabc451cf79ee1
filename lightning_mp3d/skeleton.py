"""The 15-joint skeleton shared by every part of lightning_mp3d.

Joint order (root = pelvis, index 0)::

    0 pelvis   1 neck      2 head (top of head)
    3 r_shoulder  4 l_shoulder  5 r_elbow  6 l_elbow  7 r_wrist  8 l_wrist
    9 r_hip       10 l_hip      11 r_knee  12 l_knee  13 r_ankle 14 l_ankle

These are exactly MuPoTS-3D / MPI-INF-3DHP joints 0-14 (head_top, neck, right arm, left arm, right leg,
left leg, pelvis) in another order; MuPoTS's spine (15) and head-centre (16) joints are not modelled.

Bone lengths (mm) follow the segment-length proportions of D. A. Winter, *Biomechanics and Motor Control of
Human Movement* (4th ed., 2009, Fig. 4.1) for a body height of 1700 mm: pelvis->neck = shoulder height minus
hip height (0.288 H), neck->head top (0.182 H), half the biacromial width (0.1295 H), upper arm (0.186 H),
forearm (0.146 H), half the hip width (0.0955 H), thigh (0.245 H) and shank (0.246 H). Left and right bones
are equal, which is what makes the pelvis and the neck the midpoints of the hips and shoulders.
"""

from __future__ import annotations

import torch

JOINTS: tuple[str, ...] = (
    "pelvis",
    "neck",
    "head",
    "r_shoulder",
    "l_shoulder",
    "r_elbow",
    "l_elbow",
    "r_wrist",
    "l_wrist",
    "r_hip",
    "l_hip",
    "r_knee",
    "l_knee",
    "r_ankle",
    "l_ankle",
)
NUM_JOINTS = len(JOINTS)
ROOT = 0
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINTS)}

# PARENTS[j] is the parent of joint j; the root has -1. Parents always precede children.
PARENTS: tuple[int, ...] = (-1, 0, 1, 1, 1, 3, 4, 5, 6, 0, 0, 9, 10, 11, 12)

# The 14 limbs as (parent, child), in child order: limb k ends at joint k + 1.
LIMBS: tuple[tuple[int, int], ...] = tuple((PARENTS[j], j) for j in range(1, NUM_JOINTS))
NUM_LIMBS = len(LIMBS)

# FLIP_PERM[j] is the joint that j becomes under a left/right mirror.
FLIP_PERM: tuple[int, ...] = (0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13)
# The same for limbs (limb k ends at joint k + 1).
LIMB_FLIP_PERM: tuple[int, ...] = tuple(FLIP_PERM[child] - 1 for _, child in LIMBS)

_HEIGHT_MM = 1700.0
_BONE_FRACTION = {
    "neck": 0.288,
    "head": 0.182,
    "shoulder": 0.1295,
    "elbow": 0.186,
    "wrist": 0.146,
    "hip": 0.0955,
    "knee": 0.245,
    "ankle": 0.246,
}


def _bone_length(joint: str) -> float:
    key = joint.split("_")[-1]
    return _BONE_FRACTION[key] * _HEIGHT_MM


# BONE_LENGTHS[j] is the length (mm) of the bone from PARENTS[j] to j; 0 for the root.
BONE_LENGTHS: tuple[float, ...] = (0.0,) + tuple(_bone_length(name) for name in JOINTS[1:])

# Joint groups used by per-group metrics (MuPoTS-3D Table 4 style).
JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "head": (2,),
    "neck": (1,),
    "shoulders": (3, 4),
    "elbows": (5, 6),
    "wrists": (7, 8),
    "hips": (9, 10),
    "knees": (11, 12),
    "ankles": (13, 14),
    "pelvis": (0,),
}

# MuPoTS-17 and COCO-18 agree on joints 1-13: the neck, then the right arm, left arm, right leg and left leg.
_NECK_ARMS_LEGS: tuple[str, ...] = (
    "neck",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
)

# MPI-INF-3DHP / MuPoTS-3D 17-joint order.
MUPOTS17_JOINTS: tuple[str, ...] = ("head_top", *_NECK_ARMS_LEGS, "pelvis", "spine", "head")
# ours = mupots17[..., MUPOTS17_TO_OURS, :]
MUPOTS17_TO_OURS: tuple[int, ...] = (14, 1, 0, 2, 5, 3, 6, 4, 7, 8, 11, 9, 12, 10, 13)

# OpenPose COCO-18 order (Cao et al.): 0 nose, 1 neck, 2-4 right arm, 5-7 left arm, 8-10 right leg,
# 11-13 left leg, 14 r_eye, 15 l_eye, 16 r_ear, 17 l_ear.
COCO18_JOINTS: tuple[str, ...] = ("nose", *_NECK_ARMS_LEGS, "r_eye", "l_eye", "r_ear", "l_ear")
# ours[k] = coco18[COCO18_TO_OURS[k]]; -1 marks joints COCO-18 lacks: the pelvis (mid-hip of COCO 8 and 11)
# and the head top (derived from nose, eyes, ears and neck by the teacher's channel map).
COCO18_TO_OURS: tuple[int, ...] = (-1, 1, -1, 2, 5, 3, 6, 4, 7, 8, 11, 9, 12, 10, 13)


def joint_index(name: str) -> int:
    """Index of a joint by name, with an error that lists the valid names."""
    try:
        return JOINT_INDEX[name]
    except KeyError:
        raise ValueError(f"unknown joint name {name!r}; expected one of {', '.join(JOINTS)}") from None


def bone_lengths(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """BONE_LENGTHS as a tensor: (J,) millimetres."""
    return torch.tensor(BONE_LENGTHS, dtype=dtype, device=device)


def check_pose_shape(poses: torch.Tensor, name: str = "poses") -> None:
    """Raise a ValueError unless ``poses`` is (..., 15, 3)."""
    if poses.ndim < 2 or poses.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must be (..., {NUM_JOINTS}, 3), got {tuple(poses.shape)}")


def flip_poses(poses: torch.Tensor) -> torch.Tensor:
    """Swap left and right joint labels: (..., 15, D) -> (..., 15, D). Coordinates are not mirrored."""
    return poses[..., list(FLIP_PERM), :]
