"""Canonical frame, local pose (T_L) and forward kinematics (FK) for the 15-joint skeleton.

Convention
----------
- Poses are row vectors: ``(..., J, 3)`` in millimetres; a rotation ``R`` acts as ``p @ R.transpose(-1, -2)``.
- Root joint: pelvis (index 0). Root-relative means the pelvis is at the origin.
- Canonical frame (paper suppl. 1 a): X = n, the unit normal of the plane (neck, l_hip, r_hip), computed as
  ``normalize(cross(r_hip - neck, l_hip - neck))`` so that it points out of the chest; Z = the pelvis->neck
  direction made orthogonal to X ("up"); Y = Z x X (the person's left). Right-handed.
- Local frame of joint j with parent p (paper suppl. 1 b): e1 = the parent bone direction (grandparent -> p),
  e2 = n made orthogonal to e1 (Gram-Schmidt), e3 = e1 x e2. Children of the pelvis (neck, hips) have no
  parent bone and use e1 = Z, e2 = X, e3 = Y. p_l[j] holds the unit bone direction (p -> j) in that frame;
  p_l[pelvis] is zero. The frame degenerates only when a parent bone is parallel to n (an upper arm or
  thigh pointing straight forward or back), a measure-zero set.
- Spherical angles of a local direction: polar gamma = angle from e1 in [0, pi]; azimuth theta in (-pi, pi]
  measured from e2 towards e3: ``u = (cos g, sin g cos t, sin g sin t)``.
- Degrees of freedom enforced by FK: the neck is always along +Z (0 DoF); the right hip lies in the body plane
  (its e2 = X component is dropped and its e3 = Y component made negative: 1 DoF, always on the person's
  right, so FK output is always a valid canonical pose whose canonical frame is the identity); the left hip and
  the left shoulder mirror the right ones through the pelvis and neck, which are midpoints (0 DoF).
"""

from __future__ import annotations

import torch

from lightning_mp3d.skeleton import BONE_LENGTHS, NUM_JOINTS, PARENTS, check_pose_shape, joint_index

_NECK = joint_index("neck")
_R_HIP, _L_HIP = joint_index("r_hip"), joint_index("l_hip")
_R_SHOULDER, _L_SHOULDER = joint_index("r_shoulder"), joint_index("l_shoulder")


def _depth(j: int) -> int:
    return 0 if PARENTS[j] < 0 else 1 + _depth(PARENTS[j])


# Joints grouped by depth in the tree: FK loops over the 4 levels, never over joints.
_LEVELS: tuple[tuple[int, ...], ...] = tuple(
    tuple(j for j in range(NUM_JOINTS) if _depth(j) == d) for d in range(1, 1 + max(map(_depth, range(NUM_JOINTS))))
)


def normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit vectors along the last axis, with finite gradients at zero: (..., D) -> (..., D)."""
    return v * torch.rsqrt((v * v).sum(-1, keepdim=True) + eps)


def canonical_frame(poses: torch.Tensor) -> torch.Tensor:
    """Rotation into the canonical frame.

    Args:
        poses: (..., 15, 3) millimetres, any frame (root-relative or not).

    Returns:
        (..., 3, 3) rotation whose rows are the canonical X, Y, Z axes: ``p_c = p_r @ R.mT``.
    """
    check_pose_shape(poses)
    neck, pelvis = poses[..., _NECK, :], poses[..., 0, :]
    x = normalize(torch.cross(poses[..., _R_HIP, :] - neck, poses[..., _L_HIP, :] - neck, dim=-1))
    up = neck - pelvis
    z = normalize(up - (up * x).sum(-1, keepdim=True) * x)
    y = torch.cross(z, x, dim=-1)
    return torch.stack((x, y, z), dim=-2)


def to_canonical(poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Root-relative canonical pose p_c and the rotation used.

    Args:
        poses: (..., 15, 3) millimetres.

    Returns:
        p_c (..., 15, 3) millimetres with the pelvis at the origin, and R (..., 3, 3) with
        ``p_c = (poses - pelvis) @ R.mT``.
    """
    rotation = canonical_frame(poses)
    p_r = poses - poses[..., :1, :]
    return p_r @ rotation.mT, rotation


def _bone_frames(bone: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local frame axes (e1, e2, e3), each (..., n, 3), of joints whose parent bone is ``bone`` (..., n, 3).

    e1 = the bone direction, e2 = n = +X made orthogonal to e1, e3 = e1 x e2 (canonical coordinates).
    """
    e1 = normalize(bone)
    e1x = e1[..., :1]
    e2 = normalize(torch.cat((1.0 - e1x * e1x, -e1x * e1[..., 1:]), -1))  # X - (X . e1) e1
    return e1, e2, torch.cross(e1, e2, dim=-1)


# Joints whose parent is the pelvis use the fixed frame (e1, e2, e3) = (Z, X, Y): local (a, b, c) = canonical (b, c, a).
_ROOT_CHILDREN = tuple(j for j in range(1, NUM_JOINTS) if PARENTS[j] == 0)
_BONE_CHILDREN = tuple(j for j in range(1, NUM_JOINTS) if PARENTS[j] > 0)
_TO_LOCAL_ORDER = [2, 0, 1]  # canonical (x, y, z) -> local (z, x, y)


def to_local(p_c: torch.Tensor) -> torch.Tensor:
    """T_L: canonical pose -> local pose.

    Args:
        p_c: (..., 15, 3) canonical pose, millimetres (the pelvis is subtracted first).

    Returns:
        p_l (..., 15, 3): unit bone directions in each joint's parent-relative frame; row 0 is zero.
    """
    check_pose_shape(p_c, "p_c")
    p_l = torch.zeros_like(p_c)
    u = normalize(p_c[..., 1:, :] - p_c[..., list(PARENTS[1:]), :])  # (..., 14, 3) canonical bone directions
    roots = [j - 1 for j in _ROOT_CHILDREN]
    p_l[..., _ROOT_CHILDREN, :] = u[..., roots, :][..., _TO_LOCAL_ORDER]
    bones = [j - 1 for j in _BONE_CHILDREN]
    parents = [PARENTS[j] for j in _BONE_CHILDREN]
    e1, e2, e3 = _bone_frames(p_c[..., parents, :] - p_c[..., [PARENTS[p] for p in parents], :])
    ub = u[..., bones, :]
    p_l[..., _BONE_CHILDREN, :] = torch.stack(((ub * e1).sum(-1), (ub * e2).sum(-1), (ub * e3).sum(-1)), -1)
    return p_l


def forward_kinematics(p_l: torch.Tensor, bone_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """FK: local pose -> canonical pose with fixed bone lengths.

    Args:
        p_l: (..., 15, 3) local bone directions (need not be unit: each row is normalised); row 0 is ignored.
            Rows of the neck, l_hip and l_shoulder are ignored as well (0 DoF, see the module header).
        bone_lengths: (15,) millimetres; defaults to ``skeleton.BONE_LENGTHS``.

    Returns:
        p_c (..., 15, 3) millimetres, pelvis at the origin.
    """
    check_pose_shape(p_l, "p_l")
    if bone_lengths is None:
        bone_lengths = torch.tensor(BONE_LENGTHS, dtype=p_l.dtype, device=p_l.device)
    u_local = normalize(p_l)
    zero = torch.zeros_like(u_local[..., 0, :])
    joints: list[torch.Tensor] = [zero] * NUM_JOINTS
    # Level 1, fixed frame. Neck: along +Z (0 DoF). Right hip: in the body plane (drop X) on the right (-Y): 1 DoF.
    r_hip = u_local[..., _R_HIP, :]
    r_hip = normalize(torch.stack((torch.zeros_like(r_hip[..., 0]), -r_hip[..., 2].abs(), r_hip[..., 0]), -1))
    up = torch.zeros_like(zero)
    up[..., 2] = 1.0
    joints[_NECK] = bone_lengths[_NECK] * up
    joints[_R_HIP] = bone_lengths[_R_HIP] * r_hip
    joints[_L_HIP] = -bone_lengths[_L_HIP] * r_hip
    for level in _LEVELS[1:]:
        parents = [PARENTS[j] for j in level]
        parent = torch.stack([joints[p] for p in parents], -2)  # (..., n, 3)
        grand = torch.stack([joints[PARENTS[p]] for p in parents], -2)
        e1, e2, e3 = _bone_frames(parent - grand)
        loc = u_local[..., list(level), :]
        u = e1 * loc[..., :1] + e2 * loc[..., 1:2] + e3 * loc[..., 2:]  # (..., n, 3) canonical directions
        if _L_SHOULDER in level:
            u = u.clone()
            u[..., level.index(_L_SHOULDER), :] = -u[..., level.index(_R_SHOULDER), :]
        child = parent + bone_lengths[list(level), None] * u
        for k, j in enumerate(level):
            joints[j] = child[..., k, :]
    return torch.stack(joints, -2)


def spherical_to_local(theta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Local unit vectors from azimuth ``theta`` and polar angle ``gamma`` (radians): (...) -> (..., 3)."""
    s = torch.sin(gamma)
    return torch.stack((torch.cos(gamma), s * torch.cos(theta), s * torch.sin(theta)), dim=-1)


def local_to_spherical(p_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Azimuth theta in (-pi, pi] and polar angle gamma in [0, pi] (radians) of local vectors (..., 3)."""
    u = normalize(p_l)
    gamma = torch.acos(u[..., 0].clamp(-1.0, 1.0))
    theta = torch.atan2(u[..., 2], u[..., 1])
    return theta, gamma
