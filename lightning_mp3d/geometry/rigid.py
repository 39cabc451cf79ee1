"""Rigid rotation T_R from 6 sin/cos numbers, its inverse, and Procrustes alignment.

Convention
----------
- Row vectors: ``rotated = points @ R.mT``; rotations are (..., 3, 3), proper (det +1).
- Camera axes: x right, y down, z forward (into the scene). Millimetres.
- ``CANONICAL_TO_CAMERA`` (R_0) maps the canonical axes (X front, Y left, Z up) onto an upright person facing
  the camera: front -> -z, left -> +x, up -> -y.
- Euler angles (yaw, pitch, roll) act in the camera frame after R_0:
  ``R(c) = R_y(yaw) @ R_x(pitch) @ R_z(roll)`` and T_R uses ``R(c) @ R_0``, so c = 0 is an upright frontal
  person and gimbal lock (pitch = +-90 deg) means looking straight down on the head, which real scenes avoid.
- c is (..., 6) = (sin yaw, cos yaw, sin pitch, cos pitch, sin roll, cos roll); each (sin, cos) pair is
  normalised first, so any 6 numbers (e.g. a network's output) give a valid rotation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.geometry.pose import normalize

CANONICAL_TO_CAMERA = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])


def _check_sincos(c: torch.Tensor) -> None:
    if c.shape[-1:] != (6,):
        raise ValueError(f"rotation parameters c must be (..., 6), got {tuple(c.shape)}")


def euler_to_sincos(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) radians (yaw, pitch, roll) -> (..., 6) sin/cos parameters."""
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def sincos_to_euler(c: torch.Tensor) -> torch.Tensor:
    """(..., 6) sin/cos parameters -> (..., 3) radians (yaw, pitch, roll), each in (-pi, pi]."""
    _check_sincos(c)
    pairs = c.unflatten(-1, (3, 2))
    return torch.atan2(pairs[..., 0], pairs[..., 1])


def sincos_to_matrix(c: torch.Tensor) -> torch.Tensor:
    """R(c) = R_y(yaw) R_x(pitch) R_z(roll): (..., 6) -> (..., 3, 3). Excludes R_0."""
    _check_sincos(c)
    pairs = normalize(c.unflatten(-1, (3, 2)))  # (..., 3, 2) unit (sin, cos)
    sy, cy = pairs[..., 0, 0], pairs[..., 0, 1]
    sp, cp = pairs[..., 1, 0], pairs[..., 1, 1]
    sr, cr = pairs[..., 2, 0], pairs[..., 2, 1]
    row0 = torch.stack((cy * cr + sy * sp * sr, -cy * sr + sy * sp * cr, sy * cp), -1)
    row1 = torch.stack((cp * sr, cp * cr, -sp), -1)
    row2 = torch.stack((-sy * cr + cy * sp * sr, sy * sr + cy * sp * cr, cy * cp), -1)
    return torch.stack((row0, row1, row2), -2)


def matrix_to_sincos(rotation: torch.Tensor) -> torch.Tensor:
    """Inverse of ``sincos_to_matrix`` away from gimbal lock: (..., 3, 3) -> (..., 6)."""
    yaw = torch.atan2(rotation[..., 0, 2], rotation[..., 2, 2])
    pitch = torch.atan2(-rotation[..., 1, 2], torch.hypot(rotation[..., 1, 0], rotation[..., 1, 1]))
    roll = torch.atan2(rotation[..., 1, 0], rotation[..., 1, 1])
    return euler_to_sincos(torch.stack((yaw, pitch, roll), -1))


def canonical_to_camera_rotation(c: torch.Tensor) -> torch.Tensor:
    """The full T_R rotation ``R(c) @ R_0``: (..., 6) -> (..., 3, 3)."""
    return sincos_to_matrix(c) @ CANONICAL_TO_CAMERA.to(c)


def rotate(p_c: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """T_R: canonical pose -> root-relative camera-frame pose.

    Args:
        p_c: (..., J, 3) canonical pose, millimetres.
        c: (..., 6) sin/cos of (yaw, pitch, roll), broadcast against p_c's batch shape.

    Returns:
        p_r (..., J, 3) millimetres, camera axes.
    """
    return p_c @ canonical_to_camera_rotation(c).mT


def unrotate(p_r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rotate``: (..., J, 3) camera-frame root-relative pose -> canonical pose."""
    return p_r @ canonical_to_camera_rotation(c)


class Alignment(NamedTuple):
    """Similarity transform ``aligned = scale * source @ rotation.mT + translation``."""

    rotation: torch.Tensor  # (..., 3, 3)
    translation: torch.Tensor  # (..., 3)
    scale: torch.Tensor  # (...)
    aligned: torch.Tensor  # (..., J, 3)


def procrustes_align(source: torch.Tensor, target: torch.Tensor, scale: bool = True, eps: float = 1e-9) -> Alignment:
    """Least-squares similarity (or rigid, ``scale=False``) alignment of ``source`` onto ``target`` (Umeyama).

    Args:
        source: (..., J, 3) points, e.g. a predicted pose in millimetres.
        target: (..., J, 3) points of the same shape.
        scale: also fit an isotropic scale (PA-MPJPE uses True).
        eps: added to the source's variance in the scale's denominator (finite for a source collapsed to a point).

    Returns:
        Alignment with the rotation (det +1, reflections excluded), translation, scale and aligned source.
    """
    if source.shape != target.shape or source.shape[-1] != 3:
        raise ValueError(
            f"source and target must both be (..., J, 3), got {tuple(source.shape)} and {tuple(target.shape)}"
        )
    mu_s, mu_t = source.mean(-2, keepdim=True), target.mean(-2, keepdim=True)
    xs, xt = source - mu_s, target - mu_t
    cov = xt.mT @ xs  # (..., 3, 3)
    u, sigma, vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u @ vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    signs = torch.ones_like(sigma)
    signs[..., -1] = d
    rotation = u @ (signs.unsqueeze(-1) * vh)
    if scale:
        var_s = (xs * xs).sum((-1, -2))
        s = (sigma * signs).sum(-1) / (var_s + eps)
    else:
        s = torch.ones_like(sigma[..., 0])
    translation = mu_t.squeeze(-2) - s[..., None] * (mu_s @ rotation.mT).squeeze(-2)
    aligned = s[..., None, None] * source @ rotation.mT + translation.unsqueeze(-2)
    return Alignment(rotation, translation, s, aligned)
