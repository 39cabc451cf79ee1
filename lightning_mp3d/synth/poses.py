"""Artificial-pose-sampling (paper 4.1, suppl. 3): joint-angle ranges, uniform sampling, FK.

Convention
----------
- Angles live in the local parent-relative spherical system of ``geometry/pose.py``: polar angle ``gamma`` from
  e1 (the parent bone direction) in [0, 180] deg, azimuth ``theta`` in (-180, 180] deg measured from e2 (the
  body normal made orthogonal to e1) towards e3 = e1 x e2. For children of the pelvis (neck, hips) and for the
  head and the shoulders (whose parent bone pelvis -> neck is always +Z after FK), e1 = Z up, e2 = X front,
  e3 = Y left.
- Ranges are given in degrees in ``ANGLE_RANGES`` for the right side and the head only; the left side is the
  mirror image (reflect Y and swap labels), which maps ``theta -> -theta`` and keeps ``gamma``: a right range
  ``[t1, t2]`` becomes ``[-t2, -t1]`` on the left (pinned by ``test_mirrored_pose_has_mirrored_angles``).
- A theta range ``(t1, t2)`` with ``t2 < t1`` wraps through 180 deg (suppl. 3): it covers ``[t1, 180]`` and
  ``(-180, t2]``, i.e. ``[t1, t2 + 360]`` unwrapped. ``(-180, 180)`` is the full circle.
- The neck has 0 DoF (FK puts it along +Z); the right hip has 1 DoF (theta fixed at -90 deg = the person's right
  in our frames, gamma sampled); the left hip and left shoulder are derived by FK (the pelvis and the neck are
  midpoints), so no range is sampled for them.
- The paper's azimuth puts the person's right at theta = 180 deg (its right hip: theta1 = theta2 = pi), ours at
  -90 deg, so ``ours = paper + 90`` wrapped into (-180, 180] (``from_paper_theta``). Values the paper states
  (suppl. 3: right hip, right shoulder; neck 0 DoF) are used as stated through that map; every other range cites
  its biomechanics source in ``JointRange.source``.
- Sampling: every sampled angle is drawn independently and uniformly from its range (the paper's procedure), then
  ``geometry.forward_kinematics`` builds the canonical pose in millimetres with the fixed bone lengths.
- ``range_scale`` in (0, 1] shrinks every range about its centre (the embedded *source* domain's narrower pose
  distribution). Two cases have no interior centre and are handled explicitly: a full-circle theta range stays the
  full circle, and a gamma range that starts at 0 (a cap around the parent bone: straight elbow/knee, upright head)
  shrinks towards 0, so a narrower distribution still contains the neutral posture.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lightning_mp3d.geometry.pose import (
    forward_kinematics,
    local_to_spherical,
    spherical_to_local,
    to_canonical,
    to_local,
)
from lightning_mp3d.skeleton import FLIP_PERM, JOINTS, NUM_JOINTS, check_pose_shape, joint_index


class JointRange(NamedTuple):
    """Allowed local angles of one joint, degrees (see the module convention)."""

    theta: tuple[float, float]  # azimuth [t1, t2]; t2 < t1 wraps through 180
    gamma: tuple[float, float]  # polar angle from the parent bone [g1, g2], 0 <= g1 <= g2 <= 180
    source: str


def from_paper_theta(theta_deg: float) -> float:
    """The paper's azimuth (person's right at 180 deg) -> ours (person's right at -90 deg), in (-180, 180]."""
    t = (theta_deg + 90.0) % 360.0
    return t - 360.0 if t > 180.0 else t


_AAOS = "AAOS, Joint Motion: Method of Measuring and Recording (1965; Greene & Heckman 1994)"
_KAPANDJI = "Kapandji, The Physiology of the Joints, vols. 1-3"
_NASA = "NASA-STD-3000 Man-Systems Integration Standards, vol. I, sec. 3.3.2 (joint motion)"

# Right side + head, in our local frames (degrees). Each joint's entry is the direction of the bone that ENDS at it.
ANGLE_RANGES: dict[str, JointRange] = {
    "neck": JointRange(
        (0.0, 0.0),
        (0.0, 0.0),
        "paper suppl. 1/3: 0 DoF, the pelvis -> neck bone defines the canonical up axis",
    ),
    "head": JointRange(
        (-180.0, 180.0),
        (0.0, 40.0),
        f"cervical flexion 45-50, extension 45, lateral bending 45 deg ({_AAOS}; {_NASA}); a 40 deg cap about up "
        "for the neck -> head-top bone, which also carries part of the upper-trunk motion",
    ),
    "r_shoulder": JointRange(
        (from_paper_theta(120.0), from_paper_theta(240.0)),  # (-150, -30)
        (75.0, 105.0),
        "shoulder line (neck -> shoulder, rigid through the neck because the neck is the midpoint): theta from paper "
        "suppl. 3 (a 120 deg range, theta1 = 120 deg to theta2 = 240 deg = -120 deg, about the person's right); "
        f"gamma (not stated in the paper): shoulder-girdle elevation/depression about 15 deg ({_KAPANDJI} vol. 1)",
    ),
    "r_elbow": JointRange(
        (-150.0, 120.0),
        (0.0, 130.0),
        f"upper arm: shoulder flexion 180, extension 60, abduction 180, horizontal adduction 130-135 deg ({_AAOS}; "
        f"{_NASA}). theta -90 = arm down, 0 = forward, 90 = up, -150 = 60 deg extension behind; gamma 0 = straight "
        "out to the side along the shoulder line, 130 = across the chest",
    ),
    "r_wrist": JointRange(
        (-90.0, 90.0),
        (0.0, 145.0),
        f"forearm: elbow flexion 0-145 deg ({_AAOS}; {_KAPANDJI} vol. 1); the flexion plane turns with humeral "
        "internal/external rotation of 70/90 deg, so with the arm down theta -90 = forearm across the belly, "
        "0 = forward, 90 = out to the side",
    ),
    "r_hip": JointRange(
        (from_paper_theta(180.0), from_paper_theta(180.0)),  # (-90, -90)
        (60.0, 120.0),
        "paper main text 4.1 / suppl. 3: 1 DoF, gamma in [pi/3, 2pi/3] from up (theta = pi in the paper's frame is "
        "the person's right, theta = -90 deg in ours since our e3 = +Y is the left)",
    ),
    "r_knee": JointRange(
        (-120.0, -5.0),
        (45.0, 120.0),
        f"thigh: hip extension 30, abduction 45, adduction 30 deg ({_AAOS}; {_KAPANDJI} vol. 2); flexion limited "
        "to 85 deg (of 120) so the thigh stays below the horizontal, where the knee's local frame (e2 = front made "
        "orthogonal to the thigh) flips and knee flexion would point the shank upwards. theta -90 = thigh down",
    ),
    "r_ankle": JointRange(
        (150.0, -150.0),
        (0.0, 135.0),
        f"shank: knee flexion 0-135 deg ({_AAOS}; {_NASA}) backwards (theta 180 = posterior of the thigh), with "
        f"30 deg of tibial axial rotation either way ({_KAPANDJI} vol. 2); the theta range wraps through 180 deg "
        "as suppl. 3 describes",
    ),
}

# Joints whose angles are sampled (the neck is 0 DoF; l_hip and l_shoulder are derived by FK).
_DERIVED = ("l_hip", "l_shoulder")
_FIXED = ("pelvis", "neck")
SAMPLED_JOINTS: tuple[str, ...] = tuple(name for name in JOINTS if name not in _DERIVED + _FIXED)


def _mirror(r: JointRange) -> JointRange:
    t1, t2 = r.theta
    if (t1, t2) == (-180.0, 180.0):
        return r
    return JointRange((-t2, -t1), r.gamma, f"mirror of the right side: {r.source}")


def joint_ranges() -> dict[str, JointRange]:
    """Ranges of all 15 joints (degrees): the table, the mirrored left side, zeros for pelvis and derived joints."""
    table: dict[str, JointRange] = {}
    for name in JOINTS:
        if name in ANGLE_RANGES:
            table[name] = ANGLE_RANGES[name]
        elif name.startswith("l_") and name not in _DERIVED:
            table[name] = _mirror(ANGLE_RANGES["r_" + name[2:]])
        else:
            table[name] = JointRange((0.0, 0.0), (0.0, 0.0), "not sampled (root or derived by FK)")
    return table


class RangeTensors(NamedTuple):
    """Per-joint ranges as tensors, radians, theta unwrapped so that ``theta_lo <= theta_hi``."""

    theta_lo: torch.Tensor  # (15,)
    theta_hi: torch.Tensor  # (15,)
    gamma_lo: torch.Tensor  # (15,)
    gamma_hi: torch.Tensor  # (15,)
    full_circle: torch.Tensor  # (15,) bool
    sampled: torch.Tensor  # (15,) bool: angles are drawn (and checked) for this joint


def range_tensors(
    range_scale: float = 1.0, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> RangeTensors:
    """The table as tensors, shrunk by ``range_scale`` as the module header describes.

    Args:
        range_scale: in (0, 1]; 1 keeps the literature ranges.
        dtype: of the tensors.
        device: of the tensors.

    Returns:
        RangeTensors with (15,) tensors in radians; a wrapping theta range has ``theta_hi > pi``.
    """
    if not 0.0 < range_scale <= 1.0:
        raise ValueError(f"range_scale must be in (0, 1], got {range_scale}")
    table = joint_ranges()
    rows = []
    for name in JOINTS:
        r = table[name]
        t1, t2 = r.theta
        if t2 < t1:
            t2 += 360.0
        rows.append((t1, t2, r.gamma[0], r.gamma[1], float((t1, t2) == (-180.0, 180.0))))
    v = torch.tensor(rows, dtype=torch.float64)
    t_lo, t_hi, g_lo, g_hi, full = v.unbind(-1)
    full = full.bool()
    t_mid, t_half = (t_lo + t_hi) / 2, (t_hi - t_lo) / 2 * range_scale
    t_lo, t_hi = torch.where(full, t_lo, t_mid - t_half), torch.where(full, t_hi, t_mid + t_half)
    cap = g_lo == 0.0
    g_mid, g_half = (g_lo + g_hi) / 2, (g_hi - g_lo) / 2 * range_scale
    g_lo, g_hi = torch.where(cap, g_lo, g_mid - g_half), torch.where(cap, g_hi * range_scale, g_mid + g_half)
    sampled = torch.tensor([name in SAMPLED_JOINTS for name in JOINTS])
    conv = dict(dtype=dtype, device=device)
    return RangeTensors(
        torch.deg2rad(t_lo).to(**conv),
        torch.deg2rad(t_hi).to(**conv),
        torch.deg2rad(g_lo).to(**conv),
        torch.deg2rad(g_hi).to(**conv),
        full.to(device),
        sampled.to(device),
    )


class LocalAngles(NamedTuple):
    """Spherical local angles, radians: theta in (-pi, pi], gamma in [0, pi]."""

    theta: torch.Tensor  # (..., 15)
    gamma: torch.Tensor  # (..., 15)


_NECK, _R_HIP, _L_HIP = joint_index("neck"), joint_index("r_hip"), joint_index("l_hip")
_R_SHOULDER, _L_SHOULDER = joint_index("r_shoulder"), joint_index("l_shoulder")


def _wrap(theta: torch.Tensor) -> torch.Tensor:
    """Angles (radians) into (-pi, pi]."""
    return math.pi - torch.remainder(math.pi - theta, 2 * math.pi)


def sample_local_angles(
    n: int,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    range_scale: float = 1.0,
) -> LocalAngles:
    """Uniform independent samples of every sampled joint's (theta, gamma).

    Args:
        n: number of poses.
        generator: torch.Generator on ``device`` (None: the global RNG).
        range_scale: in (0, 1], see the module header.
        dtype: of the angles.
        device: of the angles (and of ``generator``).

    Returns:
        LocalAngles (n, 15) radians. Neck and pelvis rows are 0; the derived l_hip / l_shoulder rows hold the angles
        FK gives them (the negated right-side direction in the shared pelvis/neck frame), so that
        ``local_angles(forward_kinematics(spherical_to_local(*angles)))`` reproduces every row.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    r = range_tensors(range_scale, dtype=dtype, device=device)
    u = torch.rand(n, NUM_JOINTS, 2, generator=generator, dtype=dtype, device=device)
    theta = _wrap(r.theta_lo + (r.theta_hi - r.theta_lo) * u[..., 0])
    gamma = r.gamma_lo + (r.gamma_hi - r.gamma_lo) * u[..., 1]
    sampled = r.sampled
    theta, gamma = theta * sampled, gamma * sampled
    # Derived joints: -u in the same (Z, X, Y) frame -> gamma' = pi - gamma, theta' = theta + pi.
    derived, source = [_L_HIP, _L_SHOULDER], [_R_HIP, _R_SHOULDER]
    theta[:, derived] = _wrap(theta[:, source] + math.pi)
    gamma[:, derived] = math.pi - gamma[:, source]
    return LocalAngles(theta, gamma)


def local_angles(p_c: torch.Tensor) -> LocalAngles:
    """(theta, gamma) of every joint of canonical poses: T_L then spherical angles.

    Args:
        p_c: (..., 15, 3) canonical poses, millimetres.

    Returns:
        LocalAngles (..., 15) radians; the pelvis row is (0, 0).
    """
    theta, gamma = local_to_spherical(to_local(p_c))
    theta, gamma = theta.clone(), gamma.clone()
    theta[..., 0], gamma[..., 0] = 0.0, 0.0
    return LocalAngles(theta, gamma)


def sample_artificial_poses(
    n: int,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    range_scale: float = 1.0,
) -> torch.Tensor:
    """Artificial canonical poses: uniform independent joint angles, then forward kinematics.

    Args:
        n: number of poses.
        generator: torch.Generator on ``device`` (None: the global RNG).
        range_scale: in (0, 1]; shrinks every range (see the module header).
        dtype: of the poses.
        device: of the poses (and of ``generator``).

    Returns:
        (n, 15, 3) canonical poses in millimetres, pelvis at the origin, exact bone lengths.
    """
    angles = sample_local_angles(n, generator, dtype=dtype, device=device, range_scale=range_scale)
    return forward_kinematics(spherical_to_local(angles.theta, angles.gamma))


def normalize_bone_lengths(poses: torch.Tensor) -> torch.Tensor:
    """Poses from any source (MoCap) -> canonical poses with the skeleton's fixed bone lengths (suppl. 2.2).

    ``forward_kinematics(to_local(to_canonical(poses)))``: only the joint angles of the input are kept, so Ψ, M and
    D_syn all see one skeleton. The one normalisation of a pose bank: the AAE's pose loader
    (``datamodules.poses.load_pose_file``) and D_syn (``synth.compose_scenes(poses=...)``) both call it. Idempotent.

    Args:
        poses: (..., 15, 3) millimetres in our joint order, any frame.

    Returns:
        (..., 15, 3) canonical poses, millimetres, pelvis at the origin.
    """
    check_pose_shape(poses)
    return forward_kinematics(to_local(to_canonical(poses)[0]))


def _outside_interval(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return (lo - x).clamp(min=0) + (x - hi).clamp(min=0)


def joint_angle_violation(p_c: torch.Tensor, range_scale: float = 1.0) -> torch.Tensor:
    """Degrees by which each joint's local direction falls outside its range.

    The violation is ``hypot(gamma excess, sin(gamma) * theta excess)``: the polar excess plus the azimuth excess
    measured as arc on the unit sphere (the azimuth means nothing at the pole). The theta excess is the circular
    distance to the nearer end of the (possibly wrapping) arc.

    Args:
        p_c: (..., 15, 3) canonical poses, millimetres.
        range_scale: in (0, 1], the ranges to check against.

    Returns:
        (..., 15) degrees, >= 0; 0 inside the range and always 0 for the pelvis, the neck and the derived
        l_hip / l_shoulder.
    """
    check_pose_shape(p_c, "p_c")
    angles = local_angles(p_c)
    r = range_tensors(range_scale, dtype=p_c.dtype, device=p_c.device)
    gamma_excess = _outside_interval(angles.gamma, r.gamma_lo, r.gamma_hi)
    # Unwrap theta into [theta_lo, theta_lo + 2 pi) and measure the circular distance outside [lo, hi].
    rel = torch.remainder(angles.theta - r.theta_lo, 2 * math.pi)
    width = r.theta_hi - r.theta_lo
    theta_excess = torch.where(rel <= width, torch.zeros_like(rel), torch.minimum(rel - width, 2 * math.pi - rel))
    theta_excess = torch.where(r.full_circle, torch.zeros_like(theta_excess), theta_excess)
    violation = torch.hypot(gamma_excess, torch.sin(angles.gamma) * theta_excess)
    return torch.rad2deg(violation) * r.sampled


def mirror_poses(poses: torch.Tensor) -> torch.Tensor:
    """Left/right mirror image of poses in the canonical frame: reflect Y and swap labels. (..., 15, 3)."""
    check_pose_shape(poses)
    mirrored = poses * poses.new_tensor([1.0, -1.0, 1.0])
    return mirrored[..., list(FLIP_PERM), :]


def _smooth_hinge(excess: torch.Tensor, delta: float) -> torch.Tensor:
    """Huber-style hinge of a non-negative excess ``e``, with a continuous first derivative.

    0 at 0, ``e^2 / (2 delta)`` below ``delta``, ``e - delta/2`` above; ``delta`` 0 gives the plain hinge ``e``.
    """
    if delta <= 0:
        return excess
    return torch.where(excess < delta, excess * excess / (2 * delta), excess - delta / 2)


def smooth_local_angle_violation(
    p_l: torch.Tensor,
    range_scale: float = 1.0,
    *,
    margin: float = 0.0,
    delta: float = math.radians(5.0),
    eps: float = 1e-6,
) -> torch.Tensor:
    """Differentiable, gradient-safe version of ``joint_angle_violation`` on local poses, in radians.

    Per joint: ``hinge(gamma excess) + hinge(sin(gamma) * theta excess)`` with ``_smooth_hinge`` (Huber with
    width ``delta``), the excesses measured as in ``joint_angle_violation`` against ranges shrunk by ``margin``
    (so that a loss on it pushes poses strictly inside, where the exact check reads 0). Gradient safety: unit
    vectors via ``normalize`` (an ``eps`` under the root), ``acos`` of an argument clamped to ``[-1 + eps, 1 - eps]``
    and ``atan2`` fed a fixed direction where the azimuth is undefined (at the poles, where its weight
    ``sin(gamma)`` is 0 anyway), so gradients are finite everywhere (pinned by a float64 test).

    Args:
        p_l: (..., 15, 3) local poses (``to_local`` of canonical poses, or the decoder's output).
        range_scale: in (0, 1], the ranges to check against.
        margin: radians >= 0 by which every range is shrunk at each finite end (a theta range by at most a quarter
            of its width, so the 1-DoF hip's zero-width range stays as is; a gamma range that starts at 0 keeps 0).
        delta: radians, width of the quadratic part of the hinge.
        eps: clamp of the ``acos`` argument and threshold of the undefined azimuth.

    Returns:
        (..., 15) radians-like penalty, >= 0; exactly 0 for joints inside the (shrunk) ranges and always 0 for the
        pelvis, the neck and the derived l_hip / l_shoulder.
    """
    check_pose_shape(p_l, "p_l")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    r = range_tensors(range_scale, dtype=p_l.dtype, device=p_l.device)
    u = p_l * torch.rsqrt((p_l * p_l).sum(-1, keepdim=True) + eps * eps)
    gamma = torch.acos(u[..., 0].clamp(-1.0 + eps, 1.0 - eps))
    at_pole = u[..., 1] * u[..., 1] + u[..., 2] * u[..., 2] < eps * eps
    theta = torch.atan2(torch.where(at_pole, 0.0, u[..., 2]), torch.where(at_pole, 1.0, u[..., 1]))
    gamma_lo = torch.where(r.gamma_lo > 0, r.gamma_lo + margin, r.gamma_lo)
    gamma_excess = _outside_interval(gamma, gamma_lo, r.gamma_hi - margin)
    shrink = torch.clamp((r.theta_hi - r.theta_lo) / 4, max=margin)
    theta_lo, width = r.theta_lo + shrink, r.theta_hi - r.theta_lo - 2 * shrink
    rel = torch.remainder(theta - theta_lo, 2 * math.pi)
    theta_excess = torch.where(rel <= width, torch.zeros_like(rel), torch.minimum(rel - width, 2 * math.pi - rel))
    theta_excess = torch.where(r.full_circle, torch.zeros_like(theta_excess), theta_excess)
    penalty = _smooth_hinge(gamma_excess, delta) + _smooth_hinge(torch.sin(gamma) * theta_excess, delta)
    return penalty * r.sampled


def smooth_joint_angle_violation(p_c: torch.Tensor, range_scale: float = 1.0, **kwargs) -> torch.Tensor:
    """``smooth_local_angle_violation(to_local(p_c), ...)`` for canonical poses p_c (..., 15, 3) mm -> (..., 15)."""
    check_pose_shape(p_c, "p_c")
    return smooth_local_angle_violation(to_local(p_c), range_scale, **kwargs)
