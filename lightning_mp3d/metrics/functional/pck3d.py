"""3DPCK on the MuPoTS-3D protocol (``functional/mupots.py``): 'all' and 'matched', AUC, per group and sequence."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.metrics.functional.matching import OFFICIAL_MATCHING, MatchSpec
from lightning_mp3d.metrics.functional.mupots import (
    AUC_THRESHOLDS_MM,
    PCK3D_THRESHOLD_MM,
    SCORED_JOINTS,
    UNMATCHED_ERROR,
    auc,
    pose_errors_3d,
)
from lightning_mp3d.metrics.functional.people import (
    PeopleBatch,
    group_ratios,
    matched_people,
    mean_over_sequences,
    ratio,
)
from lightning_mp3d.skeleton import NUM_JOINTS


class PCK3DStats(NamedTuple):
    """Sufficient statistics of 3DPCK (all summed over people)."""

    correct: torch.Tensor  # (S, T, J) float64: matched GT joints with error < thresholds[t]
    people_all: torch.Tensor  # (S,) float64: valid GT people
    people_matched: torch.Tensor  # (S,) float64: matched GT people


class PCK3DResult(NamedTuple):
    """3DPCK in [0, 1]; 'all' counts unmatched GT people as all-wrong, 'matched' excludes them."""

    pck_all: torch.Tensor  # () mean of per-sequence PCKs (the MuPoTS headline)
    pck_matched: torch.Tensor  # ()
    auc_all: torch.Tensor  # () mean of per-sequence AUCs over 0:5:150 mm
    auc_matched: torch.Tensor  # ()
    pck_all_pooled: torch.Tensor  # () over all GT people of all sequences at once
    pck_matched_pooled: torch.Tensor  # ()
    per_sequence_all: torch.Tensor  # (S,) NaN where a sequence has no GT
    per_sequence_matched: torch.Tensor  # (S,)
    per_joint_all: torch.Tensor  # (J,) pooled; NaN for unscored joints
    per_group_all: dict[str, torch.Tensor]  # pooled per joint group (Table 4)
    per_group_matched: dict[str, torch.Tensor]
    detection_rate: torch.Tensor  # () matched / all GT people

    def as_dict(self, prefix: str = "pck3d") -> dict[str, torch.Tensor]:
        """Flat scalar dict for logging, e.g. ``{'pck3d/all': ..., 'pck3d/all/knees': ...}``."""
        out = {
            f"{prefix}/all": self.pck_all,
            f"{prefix}/matched": self.pck_matched,
            f"{prefix}/auc_all": self.auc_all,
            f"{prefix}/auc_matched": self.auc_matched,
            f"{prefix}/all_pooled": self.pck_all_pooled,
            f"{prefix}/matched_pooled": self.pck_matched_pooled,
            f"{prefix}/detection_rate": self.detection_rate,
        }
        out.update({f"{prefix}/all/{k}": v for k, v in self.per_group_all.items()})
        out.update({f"{prefix}/matched/{k}": v for k, v in self.per_group_matched.items()})
        out.update({f"{prefix}/all/seq{s}": v for s, v in enumerate(self.per_sequence_all)})
        return out


def _pck3d_update(
    people: PeopleBatch,
    *,
    thresholds: tuple[float, ...],
    mode: str = "relative",
    protocol: str = "official",
    match: MatchSpec = OFFICIAL_MATCHING,
    num_sequences: int = 1,
) -> PCK3DStats:
    m = matched_people(people, match, num_sequences)
    err = pose_errors_3d(m.pred_poses, m.gt_poses, mode, protocol)  # (B, G, J)
    err = torch.where(m.matched[..., None], err, torch.full_like(err, UNMATCHED_ERROR))
    th = err.new_tensor(thresholds)
    hit = (err[:, :, None, :] < th[:, None]).double()  # (B, G, T, J)
    ones = torch.ones_like(err[..., 0])
    return PCK3DStats(
        correct=m.sum_by_sequence(hit, m.matched),
        people_all=m.sum_by_sequence(ones, m.valid),
        people_matched=m.sum_by_sequence(ones, m.matched),
    )


def _pck3d_compute(stats: PCK3DStats, joints: tuple[int, ...] = SCORED_JOINTS) -> PCK3DResult:
    """Stats with thresholds (main, *AUC thresholds) -> PCK3DResult."""
    sel = list(joints)
    correct = stats.correct[..., sel].sum(-1)  # (S, T)
    nj = len(sel)
    seq_all = ratio(correct, stats.people_all[:, None] * nj)  # (S, T)
    seq_matched = ratio(correct, stats.people_matched[:, None] * nj)
    pooled = stats.correct.sum(0)  # (T, J)
    n_all, n_matched = stats.people_all.sum(), stats.people_matched.sum()
    per_joint = ratio(pooled[0], n_all.expand(NUM_JOINTS))
    unscored = torch.ones(NUM_JOINTS, dtype=torch.bool, device=per_joint.device)
    unscored[sel] = False
    per_joint = per_joint.masked_fill(unscored, float("nan"))
    return PCK3DResult(
        pck_all=mean_over_sequences(seq_all[:, 0]),
        pck_matched=mean_over_sequences(seq_matched[:, 0]),
        auc_all=mean_over_sequences(auc(seq_all[:, 1:])),
        auc_matched=mean_over_sequences(auc(seq_matched[:, 1:])),
        pck_all_pooled=ratio(pooled[0, sel].sum(), n_all * nj),
        pck_matched_pooled=ratio(pooled[0, sel].sum(), n_matched * nj),
        per_sequence_all=seq_all[:, 0],
        per_sequence_matched=seq_matched[:, 0],
        per_joint_all=per_joint,
        per_group_all=group_ratios(pooled[0], n_all.expand(NUM_JOINTS), joints),
        per_group_matched=group_ratios(pooled[0], n_matched.expand(NUM_JOINTS), joints),
        detection_rate=ratio(n_matched, n_all),
    )


def pck3d(
    people: PeopleBatch,
    *,
    threshold: float = PCK3D_THRESHOLD_MM,
    mode: str = "relative",
    protocol: str = "official",
    match: MatchSpec = OFFICIAL_MATCHING,
    num_sequences: int = 1,
    joints: tuple[int, ...] = SCORED_JOINTS,
) -> PCK3DResult:
    """3DPCK (MuPoTS-3D protocol; see ``functional/mupots.py``): a joint is correct if its error is below ``threshold``.

    Args:
        people: the batch (``gt_poses``: ``univ_annot3`` for ``protocol="official"``, else ``annot3``).
        threshold: 150 mm (3DPCK_rel and the official absolute mode) or 250 mm (the paper's 3DPCK_abs).
        mode: "relative" or "absolute".
        protocol: "official" (bone rescaling) or "plain".
        match: how people are matched (default: the official 2D matching at 40 px).
        num_sequences: length of the per-sequence breakdown; ``people.sequence`` indexes it.
        joints: the scored joints (default MuPoTS 0..13 = all of ours but the pelvis).

    Returns:
        PCK3DResult (fractions in [0, 1]).
    """
    stats = _pck3d_update(
        people, thresholds=(threshold, *AUC_THRESHOLDS_MM), mode=mode, protocol=protocol, match=match,
        num_sequences=num_sequences,
    )  # fmt: skip
    return _pck3d_compute(stats, joints)
