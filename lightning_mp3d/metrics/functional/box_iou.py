"""Person bounding-box IoU (paper suppl. 4 b): tight boxes of the 15 2D joints of matched people."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.metrics.functional.matching import OFFICIAL_MATCHING, MatchSpec
from lightning_mp3d.metrics.functional.people import PeopleBatch, matched_people, ratio


def pose_boxes(points_2d: torch.Tensor) -> torch.Tensor:
    """Tight boxes around 2D joints: (..., J, 2) pixels -> (..., 4) (x0, y0, x1, y1)."""
    return torch.cat((points_2d.amin(-2), points_2d.amax(-2)), -1)


def box_iou_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of paired boxes (..., 4) x (..., 4) -> (...); 0 when both are empty."""
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area = lambda x: (x[..., 2:] - x[..., :2]).clamp(min=0).prod(-1)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


class BoxIoUStats(NamedTuple):
    """Sufficient statistics of the person box IoU."""

    iou_sum: torch.Tensor  # (S,) float64 over matched people
    people_all: torch.Tensor  # (S,)
    people_matched: torch.Tensor  # (S,)


class BoxIoUResult(NamedTuple):
    """Mean IoU of the tight 2D-joint boxes of matched people (and with unmatched GT people as 0)."""

    iou_matched: torch.Tensor
    iou_all: torch.Tensor
    per_sequence_matched: torch.Tensor  # (S,)

    def as_dict(self, prefix: str = "box_iou") -> dict[str, torch.Tensor]:
        """Flat scalar dict for logging."""
        return {f"{prefix}/matched": self.iou_matched, f"{prefix}/all": self.iou_all}


def _box_iou_update(
    people: PeopleBatch, *, match: MatchSpec = OFFICIAL_MATCHING, num_sequences: int = 1
) -> BoxIoUStats:
    m = matched_people(people, match, num_sequences, poses=False)
    iou = box_iou_pairs(pose_boxes(m.pred_2d.double()), pose_boxes(m.gt_2d.double()))  # (B, G)
    ones = torch.ones_like(iou)
    return BoxIoUStats(
        m.sum_by_sequence(iou, m.matched), m.sum_by_sequence(ones, m.valid), m.sum_by_sequence(ones, m.matched)
    )


def _box_iou_compute(stats: BoxIoUStats) -> BoxIoUResult:
    s = stats.iou_sum.sum()
    return BoxIoUResult(
        iou_matched=ratio(s, stats.people_matched.sum()),
        iou_all=ratio(s, stats.people_all.sum()),
        per_sequence_matched=ratio(stats.iou_sum, stats.people_matched),
    )


def box_iou(people: PeopleBatch, *, match: MatchSpec = OFFICIAL_MATCHING, num_sequences: int = 1) -> BoxIoUResult:
    """Bounding-box IoU of people (paper suppl. 4 b): boxes are the tight boxes of the 15 2D joints."""
    return _box_iou_compute(_box_iou_update(people, match=match, num_sequences=num_sequences))
