"""Learning diagnostics for matched people: orientation error, canonical-pose error and pose spread (collapse).

Pure tensor functions (no Lightning). They answer the questions a camera-frame MPJPE hides: is the global
orientation right, is the articulated pose (in the person's own canonical frame) better than the mean pose, and do
the predictions differ from person to person or has the model collapsed onto one pose?

Conventions: people are already matched (pred person n <-> GT person n); ``mask`` (..., N) selects the valid pairs;
poses are (..., N, 15, 3) millimetres; rotations are T_R's full rotation ``R(c) R_0`` (``geometry.rigid``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lightning_mp3d.geometry import to_canonical
from lightning_mp3d.skeleton import ROOT


class PoseDiagnostics(NamedTuple):
    """Means over the valid people (NaN when there are none)."""

    people: int
    mpjpe_rel: float  # root-relative camera-frame MPJPE, mm
    canonical_mpjpe: float  # MPJPE of the canonical (view-free) poses, mm
    orientation_deg: float  # geodesic angle between the predicted and true canonical frames
    spread_pred: float  # mean distance of a predicted root-relative pose to the predictions' mean pose, mm
    spread_gt: float  # the same for the GT poses
    mean_pose_mpjpe: float  # root-relative MPJPE of predicting the GT's mean root-relative pose for everyone
    mean_canonical_mpjpe: float  # canonical MPJPE of the GT's mean canonical pose

    @property
    def spread_ratio(self) -> float:
        """``spread_pred / spread_gt``: below 1 the predictions collapse towards a mean pose; NaN without GT spread."""
        return self.spread_pred / self.spread_gt if self.spread_gt > 0 else math.nan


def rotation_angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations (..., 3, 3) in degrees."""
    cos = (((a.mT @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def pose_spread(poses: torch.Tensor) -> torch.Tensor:
    """Mean per-joint distance of each pose (P, J, 3) to their mean pose: 0 when every pose is the same."""
    return (poses - poses.mean(0, keepdim=True)).norm(dim=-1).mean()


def pose_diagnostics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> PoseDiagnostics:
    """Diagnostics of matched people.

    Args:
        pred: (..., N, 15, 3) predicted poses, mm (camera frame; only root-relative structure is used).
        gt: (..., N, 15, 3) GT poses, mm.
        mask: (..., N) bool, valid matched pairs.

    Returns:
        PoseDiagnostics; canonical frames come from each pose itself (``geometry.to_canonical``), so the
        diagnostics need no model internals and apply to any predictor (mean pose, lifting baselines, the student).
    """
    if pred.shape != gt.shape or pred.shape[-2:] != (15, 3) or mask.shape != pred.shape[:-2]:
        raise ValueError(
            f"pred and gt must be (..., N, 15, 3) and mask (..., N), got {tuple(pred.shape)}, {tuple(gt.shape)}, "
            f"{tuple(mask.shape)}"
        )
    p = pred[mask].double()
    g = gt[mask].double()
    n = p.shape[0]
    if n == 0:
        return PoseDiagnostics(0, *([math.nan] * 7))
    p = p - p[:, ROOT : ROOT + 1]
    g = g - g[:, ROOT : ROOT + 1]
    pc, frame_p = to_canonical(p)
    gc, frame_g = to_canonical(g)

    def err(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm(dim=-1).mean())

    return PoseDiagnostics(
        people=n,
        mpjpe_rel=err(p, g),
        canonical_mpjpe=err(pc, gc),
        orientation_deg=float(rotation_angle_deg(frame_p, frame_g).mean()),
        spread_pred=float(pose_spread(p)),
        spread_gt=float(pose_spread(g)),
        mean_pose_mpjpe=err(g.mean(0, keepdim=True).expand_as(g), g),
        mean_canonical_mpjpe=err(gc.mean(0, keepdim=True).expand_as(gc), gc),
    )
