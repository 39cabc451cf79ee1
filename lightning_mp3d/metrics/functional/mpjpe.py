"""MPJPE and PA-MPJPE (millimetres) over matched GT people, per joint, joint group and sequence."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.geometry import procrustes_align
from lightning_mp3d.metrics.functional.matching import OFFICIAL_MATCHING, MatchSpec
from lightning_mp3d.metrics.functional.people import (
    PeopleBatch,
    group_ratios,
    matched_people,
    mean_over_sequences,
    ratio,
)
from lightning_mp3d.skeleton import NUM_JOINTS, ROOT


class MPJPEStats(NamedTuple):
    """Sufficient statistics of (PA-)MPJPE over matched GT people."""

    error_sum: torch.Tensor  # (S, J) float64 millimetres
    people: torch.Tensor  # (S,) float64 matched GT people


class MPJPEResult(NamedTuple):
    """Mean per-joint position error (millimetres) over matched people."""

    mpjpe: torch.Tensor  # () pooled over all matched people and the selected joints
    mean_over_sequences: torch.Tensor  # () mean of per-sequence values (Human3.6M: the per-action 'Average')
    per_sequence: torch.Tensor  # (S,) NaN where empty
    per_joint: torch.Tensor  # (J,)
    per_group: dict[str, torch.Tensor]

    def as_dict(self, prefix: str = "mpjpe") -> dict[str, torch.Tensor]:
        """Flat scalar dict for logging."""
        out = {prefix: self.mpjpe, f"{prefix}/mean_over_sequences": self.mean_over_sequences}
        out.update({f"{prefix}/{k}": v for k, v in self.per_group.items()})
        out.update({f"{prefix}/seq{s}": v for s, v in enumerate(self.per_sequence)})
        return out


def _mpjpe_update(
    people: PeopleBatch,
    *,
    align: str = "root",
    match: MatchSpec = OFFICIAL_MATCHING,
    num_sequences: int = 1,
) -> MPJPEStats:
    m = matched_people(people, match, num_sequences)
    pred, gt = m.pred_poses.double(), m.gt_poses.double()
    if align == "root":
        pred, gt = pred - pred[..., ROOT : ROOT + 1, :], gt - gt[..., ROOT : ROOT + 1, :]
    elif align == "procrustes":
        pred = procrustes_align(pred, gt, scale=True).aligned
    elif align != "none":
        raise ValueError(f"align must be 'root', 'procrustes' or 'none', got {align!r}")
    err = (pred - gt).norm(dim=-1)  # (B, G, J)
    err = torch.where(m.matched[..., None], err, torch.zeros_like(err))  # NaN-safe for unmatched padding
    return MPJPEStats(m.sum_by_sequence(err, m.matched), m.sum_by_sequence(torch.ones_like(err[..., 0]), m.matched))


def _mpjpe_compute(stats: MPJPEStats, joints: tuple[int, ...] | None = None) -> MPJPEResult:
    sel = list(range(NUM_JOINTS)) if joints is None else list(joints)
    per_seq = ratio(stats.error_sum[:, sel].sum(-1), stats.people * len(sel))
    n = stats.people.sum()
    pooled = stats.error_sum.sum(0)  # (J,)
    return MPJPEResult(
        mpjpe=ratio(pooled[sel].sum(), n * len(sel)),
        mean_over_sequences=mean_over_sequences(per_seq),
        per_sequence=per_seq,
        per_joint=ratio(pooled, n.expand(NUM_JOINTS)),
        per_group=group_ratios(pooled, n.expand(NUM_JOINTS), tuple(sel)),
    )


def mpjpe(
    people: PeopleBatch,
    *,
    root_align: bool = True,
    match: MatchSpec = OFFICIAL_MATCHING,
    num_sequences: int = 1,
    joints: tuple[int, ...] | None = None,
) -> MPJPEResult:
    """MPJPE in millimetres over matched GT people (after pelvis alignment unless ``root_align=False``).

    Arguments as in ``pck3d``. ``joints`` None averages all 15 joints (the Human3.6M convention, root included).
    """
    stats = _mpjpe_update(people, align="root" if root_align else "none", match=match, num_sequences=num_sequences)
    return _mpjpe_compute(stats, joints)


def pa_mpjpe(
    people: PeopleBatch,
    *,
    match: MatchSpec = OFFICIAL_MATCHING,
    num_sequences: int = 1,
    joints: tuple[int, ...] | None = None,
) -> MPJPEResult:
    """PA-MPJPE (mm): MPJPE after a least-squares similarity (rotation, translation, scale) alignment of each person.

    Uses ``geometry.procrustes_align`` (not torchmetrics' ProcrustesDisparity, which normalises the scale).
    """
    stats = _mpjpe_update(people, align="procrustes", match=match, num_sequences=num_sequences)
    return _mpjpe_compute(stats, joints)
