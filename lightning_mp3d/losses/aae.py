"""Losses of the pose adversarial auto-encoder (paper suppl. 1 c, Eq. 1). Pure tensor functions, no Lightning.

L_cyc = |p_c - FK(Ψ(Φ(T_L(p_c))))| + |phi - Φ(Ψ(phi))|, phi ~ U[-1, 1]^Z. The pose term is a mean absolute error
in millimetres divided by ``pose_unit_mm`` (100 mm by default) so that it is of the same order as the phi term
(phi lives in [-1, 1]): in metres a 20 mm error would weigh 0.02 against phi errors of ~0.1 and the pose term
would be drowned out; in millimetres the phi term would be.
The adversarial losses are the non-saturating GAN losses on logits (Goodfellow et al. 2014).

``joint_limit_loss`` is an addition beyond the paper (off by default: ``joint_limit.weight`` 0 in ``AAEPretraining``
reproduces the paper's Ψ loss): the mean over decoded prior poses of the summed smooth joint-angle
violation (``synth.poses.smooth_local_angle_violation``, radians), a direct push of every Ψ(phi), phi ~ U[-1, 1]^Z,
inside the artificial-pose-sampling ranges that the adversarial loss only enforces weakly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lightning_mp3d.skeleton import check_pose_shape
from lightning_mp3d.synth.poses import smooth_local_angle_violation


class CycleLoss(NamedTuple):
    """Parts of L_cyc: ``total = pose / pose_unit_mm + phi`` (pose in mm, phi unitless)."""

    total: torch.Tensor
    pose_mm: torch.Tensor
    phi: torch.Tensor


def pose_cycle_error(p_c: torch.Tensor, p_c_hat: torch.Tensor) -> torch.Tensor:
    """Mean absolute coordinate error |p_c - p̂_c| in millimetres (scalar).

    Args:
        p_c: (..., 15, 3) canonical poses, millimetres.
        p_c_hat: (..., 15, 3) reconstructions, millimetres.
    """
    check_pose_shape(p_c, "p_c")
    if p_c_hat.shape != p_c.shape:
        raise ValueError(f"p_c_hat must have the shape of p_c {tuple(p_c.shape)}, got {tuple(p_c_hat.shape)}")
    return (p_c - p_c_hat).abs().mean()


def phi_cycle_error(phi: torch.Tensor, phi_hat: torch.Tensor) -> torch.Tensor:
    """Mean absolute embedding error |phi - Φ(Ψ(phi))| (scalar). phi, phi_hat: (..., Z)."""
    if phi_hat.shape != phi.shape:
        raise ValueError(f"phi_hat must have the shape of phi {tuple(phi.shape)}, got {tuple(phi_hat.shape)}")
    return (phi - phi_hat).abs().mean()


def cycle_loss(
    p_c: torch.Tensor,
    p_c_hat: torch.Tensor,
    phi: torch.Tensor,
    phi_hat: torch.Tensor,
    pose_unit_mm: float = 100.0,
) -> CycleLoss:
    """L_cyc of Eq. 1 with the pose term in units of ``pose_unit_mm``.

    Args:
        p_c: (..., 15, 3) canonical poses, millimetres.
        p_c_hat: (..., 15, 3) their reconstructions FK(Ψ(Φ(T_L(p_c)))), millimetres.
        phi: (..., Z) prior samples.
        phi_hat: (..., Z) their cycles Φ(Ψ(phi)).
        pose_unit_mm: millimetres per unit of the pose term (> 0).
    """
    if pose_unit_mm <= 0:
        raise ValueError(f"pose_unit_mm must be > 0, got {pose_unit_mm}")
    pose = pose_cycle_error(p_c, p_c_hat)
    phi_err = phi_cycle_error(phi, phi_hat)
    return CycleLoss(pose / pose_unit_mm + phi_err, pose, phi_err)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Disc's loss: binary cross-entropy with real -> 1, fake -> 0, averaged over both halves (scalar)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_adv for the generator Ψ: non-saturating -log D(Ψ(phi)) (scalar)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def joint_limit_loss(
    p_l: torch.Tensor, range_scale: float = 1.0, margin: float = 0.0, delta: float = math.radians(5.0)
) -> torch.Tensor:
    """Joint-limit prior on decoded poses: mean over poses of the summed smooth violation, radians (scalar).

    Args:
        p_l: (B, 15, 3) local poses, e.g. Ψ(phi) (equal to ``to_local(FK(Ψ(phi)))``, see ``models.aae``).
        range_scale: the sampling ranges to stay inside (as the data's sampler).
        margin: radians by which the ranges are shrunk for the loss (see ``smooth_local_angle_violation``).
        delta: radians, width of the quadratic part of the hinge (default 5 degrees).
    """
    check_pose_shape(p_l, "p_l")
    return smooth_local_angle_violation(p_l, range_scale, margin=margin, delta=delta).sum(-1).mean()
