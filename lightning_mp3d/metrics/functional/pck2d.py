"""2D PCK (fractions) and 2D-MPJPE (pixels) of matched people; the 3D fields of the batch are ignored."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.metrics.functional.matching import OFFICIAL_MATCHING, MatchSpec
from lightning_mp3d.metrics.functional.people import PeopleBatch, group_ratios, matched_people, ratio
from lightning_mp3d.skeleton import NUM_JOINTS

PCK2D_THRESHOLD_PX = 25.0


class PCK2DStats(NamedTuple):
    """Sufficient statistics of 2D PCK and 2D-MPJPE."""

    correct: torch.Tensor  # (S, J) float64 matched joints within the threshold
    error_sum: torch.Tensor  # (S, J) float64 pixels over matched people
    people_all: torch.Tensor  # (S,)
    people_matched: torch.Tensor  # (S,)


class PCK2DResult(NamedTuple):
    """2D PCK (fractions) and 2D-MPJPE (pixels)."""

    pck_all: torch.Tensor  # () pooled; unmatched GT people count as all-wrong
    pck_matched: torch.Tensor  # ()
    mpjpe_2d: torch.Tensor  # () pixels over matched people
    per_sequence_all: torch.Tensor  # (S,)
    per_group_all: dict[str, torch.Tensor]

    def as_dict(self, prefix: str = "pck2d") -> dict[str, torch.Tensor]:
        """Flat scalar dict for logging."""
        out = {
            f"{prefix}/all": self.pck_all,
            f"{prefix}/matched": self.pck_matched,
            f"{prefix}/mpjpe_2d": self.mpjpe_2d,
        }
        out.update({f"{prefix}/all/{k}": v for k, v in self.per_group_all.items()})
        return out


def _pck2d_update(
    people: PeopleBatch,
    *,
    threshold_px: float = PCK2D_THRESHOLD_PX,
    match: MatchSpec = OFFICIAL_MATCHING,
    num_sequences: int = 1,
) -> PCK2DStats:
    m = matched_people(people, match, num_sequences, poses=False)
    err = (m.pred_2d.double() - m.gt_2d.double()).norm(dim=-1)  # (B, G, J)
    err = torch.where(m.matched[..., None], err, torch.zeros_like(err))
    ones = torch.ones_like(err[..., 0])
    return PCK2DStats(
        correct=m.sum_by_sequence((err < threshold_px).double(), m.matched),
        error_sum=m.sum_by_sequence(err, m.matched),
        people_all=m.sum_by_sequence(ones, m.valid),
        people_matched=m.sum_by_sequence(ones, m.matched),
    )


def _pck2d_compute(stats: PCK2DStats) -> PCK2DResult:
    n_all, n_m = stats.people_all.sum(), stats.people_matched.sum()
    correct = stats.correct.sum(0)
    return PCK2DResult(
        pck_all=ratio(correct.sum(), n_all * NUM_JOINTS),
        pck_matched=ratio(correct.sum(), n_m * NUM_JOINTS),
        mpjpe_2d=ratio(stats.error_sum.sum(), n_m * NUM_JOINTS),
        per_sequence_all=ratio(stats.correct.sum(-1), stats.people_all * NUM_JOINTS),
        per_group_all=group_ratios(correct, n_all.expand(NUM_JOINTS), tuple(range(NUM_JOINTS))),
    )


def pck2d(
    people: PeopleBatch,
    *,
    threshold_px: float = PCK2D_THRESHOLD_PX,
    match: MatchSpec = OFFICIAL_MATCHING,
    num_sequences: int = 1,
) -> PCK2DResult:
    """2D PCK (a joint is correct within ``threshold_px``, 25 px in the paper) and 2D-MPJPE over all 15 joints."""
    return _pck2d_compute(_pck2d_update(people, threshold_px=threshold_px, match=match, num_sequences=num_sequences))
