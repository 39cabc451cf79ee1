"""Person matching of the official MuPoTS-3D evaluation, and the one type that says how a metric matches people.

**Matching** (``match_people``) is the official MuPoTS-3D protocol (MPI's ``mpii_multiperson_get_identity_matching.m``
as called from ``mpii_mupots_multiperson_eval.m``): greedy over GT people in their order; each prediction is used
at most once; the score of a prediction is the number of the 13 joints neck..left-ankle (MuPoTS 1..13) whose 2D
position is within ``|dx| < thr`` and ``|dy| < thr`` pixels of the GT (predicted joints at exactly (0, 0) count
as missing); the best (first on ties) prediction is taken when its score is above 0. ``thr`` is 40 px in the
official script, on MuPoTS's full-resolution images (2048x2048 / 1920x1080). Evaluate there when you can (the
MuPoTS loader gives the inverse mapping of the 224 px input); for scenes that only exist at 224 px use
``MATCH_THRESHOLD_PX_224`` = 40 * 224 / 2048 = 4.375 px, the same fraction of the image width as the official
40 px on a 2048 px frame.

Already paired data (Human3.6M: prediction g belongs to GT g) uses ``index_matching``. ``MatchSpec`` names which of
the two a metric uses and at which threshold; every person metric takes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

OFFICIAL_MATCH_THRESHOLD_PX = 40.0
MATCH_THRESHOLD_PX_224 = OFFICIAL_MATCH_THRESHOLD_PX * 224.0 / 2048.0
# MuPoTS 1..13 (neck .. left ankle) in our order: every joint but the pelvis (0) and the head top (2).
MATCHING_JOINTS: tuple[int, ...] = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)


class Matching(NamedTuple):
    """Per-GT result of ``match_people``."""

    index: torch.Tensor  # (B, G) long, matched prediction index or -1
    matched: torch.Tensor  # (B, G) bool
    score: torch.Tensor  # (B, G) long, number of agreeing joints of the chosen prediction (0 if unmatched)


def match_people(
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    joints: tuple[int, ...] = MATCHING_JOINTS,
) -> Matching:
    """Match predicted to GT people per frame exactly as the official MuPoTS-3D evaluation does.

    Greedy over GT people in order (a loop over G, vectorised over frames); each prediction is used once; score =
    number of ``joints`` with ``|dx| < threshold_px`` and ``|dy| < threshold_px`` (predicted joints at exactly
    (0, 0) do not count); the first best prediction is taken if its score is above 0. Masked-out GT people
    never match and consume nothing.

    Args:
        pred_2d: (B, P, J, 2) predicted joints, pixels.
        pred_mask: (B, P) bool, which predictions exist.
        gt_2d: (B, G, J, 2) GT joints, pixels (same image frame as ``pred_2d``).
        gt_mask: (B, G) bool, which GT people are valid.
        threshold_px: half-size of the agreement box; 40 px on MuPoTS's full-resolution images,
            ``MATCH_THRESHOLD_PX_224`` on 224 px inputs.
        joints: joint indices that vote (default: MuPoTS 1..13 in our order).

    Returns:
        Matching with (B, G) index (-1 when unmatched), matched flags and scores.
    """
    if pred_2d.ndim != 4 or gt_2d.ndim != 4 or pred_2d.shape[-1] != 2 or gt_2d.shape[-1] != 2:
        raise ValueError(
            f"pred_2d and gt_2d must be (B, P, J, 2) and (B, G, J, 2), got {tuple(pred_2d.shape)}, {tuple(gt_2d.shape)}"
        )
    b, p = pred_2d.shape[:2]
    g = gt_2d.shape[1]
    if pred_mask.shape != (b, p) or gt_mask.shape != (b, g):
        raise ValueError(
            f"pred_mask must be (B, P) = {(b, p)} and gt_mask (B, G) = {(b, g)}, "
            f"got {tuple(pred_mask.shape)}, {tuple(gt_mask.shape)}"
        )
    sel = list(joints)
    pr, gt = pred_2d[:, :, sel].double(), gt_2d[:, :, sel].double()  # (B, P, K, 2), (B, G, K, 2)
    visible = (pr != 0).any(-1)  # (B, P, K): the official script treats (0, 0) as a missing prediction
    close = ((gt[:, :, None] - pr[:, None]).abs() < threshold_px).all(-1)  # (B, G, P, K)
    scores_all = (close & visible[:, None]).sum(-1)  # (B, G, P)
    available = pred_mask.clone()  # (B, P)
    index = torch.full((b, g), -1, dtype=torch.long, device=pred_2d.device)
    score = torch.zeros((b, g), dtype=torch.long, device=pred_2d.device)
    rows = torch.arange(b, device=pred_2d.device)
    for k in range(g):  # greedy over GT people; G is at most a few
        s = torch.where(available, scores_all[:, k], torch.zeros_like(scores_all[:, k]))  # (B, P)
        if p == 0:
            break
        best_score, best = s.max(-1)  # first maximum on ties, like MATLAB's max / NumPy's argmax
        ok = (best_score > 0) & gt_mask[:, k]
        index[:, k] = torch.where(ok, best, torch.full_like(best, -1))
        score[:, k] = torch.where(ok, best_score, torch.zeros_like(best_score))
        available[rows[ok], best[ok]] = False
    return Matching(index, index >= 0, score)


def index_matching(pred_mask: torch.Tensor, gt_mask: torch.Tensor) -> Matching:
    """Matching by position (prediction g belongs to GT g), for already-paired data such as Human3.6M."""
    b, g = gt_mask.shape
    p = pred_mask.shape[1]
    has_pred = torch.zeros_like(gt_mask)
    n = min(p, g)
    has_pred[:, :n] = pred_mask[:, :n]
    matched = gt_mask & has_pred
    index = torch.where(
        matched, torch.arange(g, device=gt_mask.device).expand(b, g), torch.full_like(matched, -1, dtype=torch.long)
    )
    return Matching(index, matched, matched.long())


def gather_matched(pred: torch.Tensor, matching: Matching) -> torch.Tensor:
    """Reorder predictions into GT order: (B, P, ...) -> (B, G, ...), zeros where unmatched."""
    b, g = matching.index.shape
    idx = matching.index.clamp(min=0)
    out = pred[torch.arange(b, device=pred.device)[:, None], idx]  # (B, G, ...)
    keep = matching.matched.view(b, g, *([1] * (pred.ndim - 2)))
    return torch.where(keep, out, torch.zeros_like(out))


@dataclass(frozen=True)
class MatchSpec:
    """How a person metric pairs predictions with GT people.

    Args:
        method: "2d" (the official MuPoTS-3D matching, ``match_people``) or "index" (already paired: prediction g
            is GT g, ``index_matching``; Human3.6M).
        threshold_px: half-size of the "2d" agreement box: 40 px on full-resolution MuPoTS frames,
            ``MATCH_THRESHOLD_PX_224`` on 224 px inputs. Unused by "index".
    """

    method: Literal["2d", "index"] = "2d"
    threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX

    def __post_init__(self) -> None:
        if self.method not in ("2d", "index"):
            raise ValueError(
                f"matching method must be '2d' (official MuPoTS protocol) or 'index' (already paired), "
                f"got {self.method!r}"
            )
        if not self.threshold_px > 0:
            raise ValueError(f"match threshold_px must be positive, got {self.threshold_px}")
        object.__setattr__(self, "threshold_px", float(self.threshold_px))

    def match(
        self, pred_2d: torch.Tensor, pred_mask: torch.Tensor, gt_2d: torch.Tensor, gt_mask: torch.Tensor
    ) -> Matching:
        """Match a batch: (B, P, J, 2) / (B, P) predictions against (B, G, J, 2) / (B, G) GT -> (B, G) Matching."""
        if self.method == "2d":
            return match_people(pred_2d, pred_mask, gt_2d, gt_mask, self.threshold_px)
        return index_matching(pred_mask, gt_mask)


OFFICIAL_MATCHING = MatchSpec()  # the official MuPoTS-3D matching at 40 px (full-resolution frames)
