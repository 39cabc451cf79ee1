"""AP_root (RootNet, Moon et al.): average precision of root localisation; a prediction is a TP within 25 cm.

The input is a ``RootsBatch`` (the roots and their confidences, as ``PeopleBatch`` is the input of the person
metrics); ``_ap_root_update`` checks it and returns per-prediction statistics, ``_ap_root_compute`` the AP, and the
public ``ap_root`` chains both.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

AP_ROOT_THRESHOLD_MM = 250.0


class RootsBatch(NamedTuple):
    """A batch of frames with padded predicted and GT roots: the input of AP_root."""

    pred_roots: torch.Tensor  # (B, P, 3) millimetres, camera frame
    pred_scores: torch.Tensor  # (B, P) confidence
    pred_mask: torch.Tensor  # (B, P) bool: which predictions exist
    gt_roots: torch.Tensor  # (B, G, 3) millimetres, camera frame
    gt_mask: torch.Tensor  # (B, G) bool: which GT people are valid

    def sizes(self) -> tuple[int, int, int]:
        """Validate the shapes; return (B, P, G)."""
        pred_roots, pred_scores, pred_mask, gt_roots, gt_mask = self
        if pred_roots.ndim != 3 or pred_roots.shape[-1] != 3 or gt_roots.ndim != 3 or gt_roots.shape[-1] != 3:
            raise ValueError(
                f"pred_roots and gt_roots must be (B, P, 3) and (B, G, 3) mm, "
                f"got {tuple(pred_roots.shape)}, {tuple(gt_roots.shape)}"
            )
        b, p = pred_roots.shape[:2]
        g = gt_roots.shape[1]
        if (
            pred_scores.shape != (b, p)
            or pred_mask.shape != (b, p)
            or gt_mask.shape != (b, g)
            or gt_roots.shape[0] != b
        ):
            raise ValueError(f"pred_scores/pred_mask must be (B, P) = {(b, p)} and gt_mask (B, G) = {(b, g)}")
        return b, p, g


class APRootStats(NamedTuple):
    """Per-prediction confidences and TP flags (flattened), and the GT count."""

    scores: torch.Tensor  # (N,) float64
    true_positive: torch.Tensor  # (N,) float64 0/1
    num_gt: torch.Tensor  # () float64


def _ap_root_update(roots: RootsBatch, *, threshold_mm: float = AP_ROOT_THRESHOLD_MM) -> APRootStats:
    b, p, _ = roots.sizes()
    pred_roots, pred_scores, pred_mask, gt_roots, gt_mask = roots
    dist = (pred_roots.double()[:, :, None] - gt_roots.double()[:, None]).norm(dim=-1)  # (B, P, G)
    dist = dist.masked_fill(~gt_mask[:, None], float("inf"))
    order = torch.sort(pred_scores.masked_fill(~pred_mask, float("-inf")), dim=1, descending=True, stable=True).indices
    free = gt_mask.clone()
    tp = torch.zeros((b, p), dtype=torch.float64, device=pred_roots.device)
    rows = torch.arange(b, device=pred_roots.device)
    for k in range(p):  # predictions by decreasing confidence; P is small
        i = order[:, k]
        d = dist[rows, i].masked_fill(~free, float("inf"))  # (B, G)
        best_d, best = d.min(-1)
        ok = (best_d < threshold_mm) & pred_mask[rows, i]
        tp[rows[ok], i[ok]] = 1.0
        free[rows[ok], best[ok]] = False
    return APRootStats(pred_scores[pred_mask].double(), tp[pred_mask], gt_mask.sum().double())


def _ap_root_compute(stats: APRootStats) -> torch.Tensor:
    """All-point interpolated average precision (area under the monotone precision envelope)."""
    if stats.num_gt <= 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    order = torch.sort(stats.scores, descending=True, stable=True).indices
    tp = stats.true_positive[order].cumsum(0)
    fp = (1 - stats.true_positive[order]).cumsum(0)
    recall = torch.cat((tp.new_zeros(1), tp / stats.num_gt))
    precision = torch.cat((tp.new_ones(1), tp / (tp + fp).clamp(min=1)))
    envelope = precision.flip(0).cummax(0).values.flip(0)
    return ((recall[1:] - recall[:-1]) * envelope[1:]).sum()


def ap_root(roots: RootsBatch, *, threshold_mm: float = AP_ROOT_THRESHOLD_MM) -> torch.Tensor:
    """AP_root (RootNet, Moon et al.): AP of root localisation, a prediction is a TP within ``threshold_mm`` (25 cm).

    Per frame, predictions in decreasing confidence take the nearest still-free GT root; AP is the area under the
    precision-recall curve with the all-point monotone envelope.

    Args:
        roots: predicted roots (B, P, 3) mm with (B, P) confidences and mask, GT roots (B, G, 3) mm with a (B, G) mask.
        threshold_mm: largest root distance of a true positive.

    Returns:
        () AP in [0, 1] (NaN without GT).
    """
    return _ap_root_compute(_ap_root_update(roots, threshold_mm=threshold_mm))
