"""Functional core of the pose metrics: person matching, MuPoTS-3D protocol, PCK/MPJPE/PA-MPJPE/2D/IoU/AP_root.

Pure tensor code (no Lightning). Every metric follows the torchmetrics layout: ``_x_update`` checks its inputs and
returns sufficient statistics (sums and counts, per sequence), ``_x_compute`` turns statistics into a NamedTuple
result, and the public ``x(...)`` chains both. The ``torchmetrics.Metric`` classes in ``metrics/pose.py`` only
declare those statistics as states.

Conventions
-----------
- Inputs are batches of frames with padded people: predictions ``(B, P, 15, 3)`` millimetres (camera frame),
  ``(B, P, 15, 2)`` pixels and a ``(B, P)`` bool mask; ground truth ``(B, G, 15, 3)``, ``(B, G, 15, 2)``,
  ``(B, G)``. ``sequence`` is ``(B,)`` long in ``[0, num_sequences)`` (MuPoTS ``TS1`` is 0) or None (all 0).
- Joint order is ours (``skeleton.JOINTS``), which is MuPoTS-3D's joints 0..14 (``skeleton.MUPOTS17_TO_OURS``).
- **Matching** (``match_people``) is the official MuPoTS-3D protocol (MPI's ``mpii_multiperson_get_identity_matching.m``
  as called from ``mpii_mupots_multiperson_eval.m``): greedy over GT people in their order; each prediction is used
  at most once; the score of a prediction is the number of the 13 joints neck..left-ankle (MuPoTS 1..13) whose 2D
  position is within ``|dx| < thr`` and ``|dy| < thr`` pixels of the GT (predicted joints at exactly (0, 0) count
  as missing); the best (first on ties) prediction is taken when its score is above 0. ``thr`` is 40 px in the
  official script, on MuPoTS's full-resolution images (2048x2048 / 1920x1080). Evaluate there when you can (the
  MuPoTS loader gives the inverse mapping of the 224 px input); for scenes that only exist at 224 px use
  ``MATCH_THRESHOLD_PX_224`` = 40 * 224 / 2048 = 4.375 px, the same fraction of the image width as the official
  40 px on a 2048 px frame.
- **Official relative protocol** (``protocol="official"``, the default): the GT should be ``univ_annot3``; both
  poses are centred on their pelvis, each predicted bone is rescaled to the GT bone length keeping its direction
  (``mpii_map_to_gt_bone_lengths.m``, walking MuPoTS's 17-joint tree from the pelvis in the script's
  ``safe_traversal_order``), joints MuPoTS 0..13 (all of ours but the pelvis) are scored with error < 150 mm,
  unmatched GT people score every joint wrong, the AUC averages the PCK over thresholds 0:5:150 mm, and the
  headline is the mean of the per-sequence PCKs. ``protocol="plain"`` skips the bone rescaling (use it with
  ``annot3``).
- **17-joint completion** for the bone rescaling: MuPoTS's tree routes pelvis -> spine -> neck and hangs a
  head-centre joint off the neck; ours has neither. ``complete_to_mupots17`` adds spine = midpoint(pelvis, neck) and
  head-centre = midpoint(neck, head top) to prediction *and* GT. The two collinear half-bones then rescale to
  exactly the GT pelvis->neck length, so an exact prediction keeps error 0 (tested), whereas a completed
  prediction against the GT's real (off-line) spine would stretch the neck by
  ``|spine - pelvis| + |neck - spine| - |neck - pelvis|``. The head-centre is a leaf and never affects scored joints.
- **Absolute mode** (``mode="absolute"``): no root centring; the official script's absolute mode keeps 150 mm
  (``threshold=150``), the paper's 3DPCK_abs (Moon et al.'s RootNet protocol) uses 250 mm (``threshold=250``);
  use ``annot3`` (camera coordinates) as GT. AP_root at 25 cm is ``ap_root``.
- Errors and sums are accumulated in float64 so that sums over DDP ranks match one process to rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.geometry import procrustes_align
from lightning_mp3d.skeleton import JOINT_GROUPS, NUM_JOINTS, ROOT

OFFICIAL_MATCH_THRESHOLD_PX = 40.0
MATCH_THRESHOLD_PX_224 = OFFICIAL_MATCH_THRESHOLD_PX * 224.0 / 2048.0
# MuPoTS 1..13 (neck .. left ankle) in our order: every joint but the pelvis (0) and the head top (2).
MATCHING_JOINTS: tuple[int, ...] = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
# MuPoTS 0..13 (the 14 joints the official script scores): every joint but the pelvis.
SCORED_JOINTS: tuple[int, ...] = tuple(range(1, NUM_JOINTS))
PCK3D_THRESHOLD_MM = 150.0
PCK3D_ABS_THRESHOLD_MM = 250.0
AUC_THRESHOLDS_MM: tuple[float, ...] = tuple(float(t) for t in range(0, 151, 5))
PCK2D_THRESHOLD_PX = 25.0
AP_ROOT_THRESHOLD_MM = 250.0
UNMATCHED_ERROR = 1e5  # what the official script writes for an unmatched GT person: every joint wrong

# MuPoTS 17-joint tree (0-based parents, pelvis = 14 is its own parent) and the official traversal without the
# pelvis (``safe_traversal_order(2:end)``).
MUPOTS17_PARENTS: tuple[int, ...] = (1, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, 14, 14, 1)
MUPOTS17_TRAVERSAL: tuple[int, ...] = (15, 1, 0, 16, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
# ours -> MuPoTS 17 positions: ours[k] is MuPoTS joint OURS_TO_MUPOTS17[k].
OURS_IN_MUPOTS17: tuple[int, ...] = (14, 1, 0, 2, 5, 3, 6, 4, 7, 8, 11, 9, 12, 10, 13)

_EPS = 1e-8


# ----------------------------------------------------------------------------------------------- input checks
def _check_people(
    pred_poses: torch.Tensor | None,
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_poses: torch.Tensor | None,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None,
    num_sequences: int,
) -> torch.Tensor:
    """Validate person-level inputs; return the (B,) long sequence index."""
    if pred_2d.ndim != 4 or pred_2d.shape[-2:] != (NUM_JOINTS, 2):
        raise ValueError(f"pred_2d must be (B, P, {NUM_JOINTS}, 2) pixels, got {tuple(pred_2d.shape)}")
    b, p = pred_2d.shape[:2]
    if gt_2d.ndim != 4 or gt_2d.shape[-2:] != (NUM_JOINTS, 2) or gt_2d.shape[0] != b:
        raise ValueError(f"gt_2d must be (B={b}, G, {NUM_JOINTS}, 2) pixels, got {tuple(gt_2d.shape)}")
    g = gt_2d.shape[1]
    if pred_mask.shape != (b, p) or pred_mask.dtype != torch.bool:
        raise ValueError(
            f"pred_mask must be a bool (B, P) = {(b, p)} tensor, got {pred_mask.dtype} {tuple(pred_mask.shape)}"
        )
    if gt_mask.shape != (b, g) or gt_mask.dtype != torch.bool:
        raise ValueError(f"gt_mask must be a bool (B, G) = {(b, g)} tensor, got {gt_mask.dtype} {tuple(gt_mask.shape)}")
    if pred_poses is not None and pred_poses.shape != (b, p, NUM_JOINTS, 3):
        raise ValueError(
            f"pred_poses must be (B, P, {NUM_JOINTS}, 3) = {(b, p, NUM_JOINTS, 3)}, got {tuple(pred_poses.shape)}"
        )
    if gt_poses is not None and gt_poses.shape != (b, g, NUM_JOINTS, 3):
        raise ValueError(
            f"gt_poses must be (B, G, {NUM_JOINTS}, 3) = {(b, g, NUM_JOINTS, 3)}, got {tuple(gt_poses.shape)}"
        )
    if sequence is None:
        return torch.zeros(b, dtype=torch.long, device=pred_2d.device)
    if sequence.shape != (b,) or sequence.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"sequence must be an integer (B,) = ({b},) tensor, got {sequence.dtype} {tuple(sequence.shape)}"
        )
    if b and (int(sequence.min()) < 0 or int(sequence.max()) >= num_sequences):
        raise ValueError(f"sequence values must lie in [0, {num_sequences}), got {sequence.tolist()}")
    return sequence.long()


# ----------------------------------------------------------------------------------------------- matching
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


def gather_matched(pred: torch.Tensor, matching: Matching) -> torch.Tensor:
    """Reorder predictions into GT order: (B, P, ...) -> (B, G, ...), zeros where unmatched."""
    b, g = matching.index.shape
    idx = matching.index.clamp(min=0)
    out = pred[torch.arange(b, device=pred.device)[:, None], idx]  # (B, G, ...)
    keep = matching.matched.view(b, g, *([1] * (pred.ndim - 2)))
    return torch.where(keep, out, torch.zeros_like(out))


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


def _match(
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    matching: str,
    threshold_px: float,
) -> Matching:
    if matching == "2d":
        return match_people(pred_2d, pred_mask, gt_2d, gt_mask, threshold_px)
    if matching == "index":
        return index_matching(pred_mask, gt_mask)
    raise ValueError(f"matching must be '2d' (official MuPoTS protocol) or 'index' (already paired), got {matching!r}")


# ----------------------------------------------------------------------------------------------- 17-joint protocol
def complete_to_mupots17(poses: torch.Tensor) -> torch.Tensor:
    """Our 15 joints -> MuPoTS's 17: (..., 15, 3) -> (..., 17, 3); spine = mid pelvis-neck, head = mid neck-top."""
    out = poses.new_zeros((*poses.shape[:-2], 17, poses.shape[-1]))
    out[..., list(OURS_IN_MUPOTS17), :] = poses
    out[..., 15, :] = 0.5 * (out[..., 14, :] + out[..., 1, :])
    out[..., 16, :] = 0.5 * (out[..., 1, :] + out[..., 0, :])
    return out


def _ancestor_matrix(parents: tuple[int, ...], traversal: tuple[int, ...]) -> torch.Tensor:
    """A[j, k] = 1 if bone k (ending at joint k) lies on the path root -> j; bones outside ``traversal`` are 0."""
    n = len(parents)
    a = torch.zeros(n, n, dtype=torch.float64)
    in_walk = set(traversal)
    for j in range(n):
        k = j
        while k in in_walk and parents[k] != k:
            a[j, k] = 1.0
            k = parents[k]
    return a


_A17 = _ancestor_matrix(MUPOTS17_PARENTS, MUPOTS17_TRAVERSAL)


def rescale_bones_to_gt(pred17: torch.Tensor, gt17: torch.Tensor) -> torch.Tensor:
    """``mpii_map_to_gt_bone_lengths``: each predicted bone keeps its direction and takes the GT length.

    Walks MuPoTS's 17-joint tree from the (unchanged) predicted pelvis. Every rescaled bone is the *original*
    predicted bone direction times the GT length, so the result is the pelvis plus a sum over ancestor bones
    (one matrix product instead of a Python walk).

    Args:
        pred17: (..., 17, 3) millimetres, MuPoTS order.
        gt17: (..., 17, 3) millimetres, MuPoTS order.

    Returns:
        (..., 17, 3) rescaled prediction.
    """
    par = list(MUPOTS17_PARENTS)
    pred_bone = pred17 - pred17[..., par, :]  # (..., 17, 3)
    gt_len = (gt17 - gt17[..., par, :]).norm(dim=-1, keepdim=True)
    bone = pred_bone * gt_len / (pred_bone.norm(dim=-1, keepdim=True) + _EPS)
    a = _A17.to(pred17)
    return pred17[..., 14:15, :] + a @ bone


def pose_errors_3d(
    pred_poses: torch.Tensor, gt_poses: torch.Tensor, mode: str = "relative", protocol: str = "official"
) -> torch.Tensor:
    """Per-joint 3D errors of paired poses under the MuPoTS protocol: (..., 15, 3) x2 -> (..., 15) millimetres.

    Args:
        pred_poses: (..., 15, 3) millimetres, camera frame.
        gt_poses: (..., 15, 3) millimetres (``univ_annot3`` for the official relative protocol).
        mode: "relative" (both centred on their pelvis) or "absolute" (camera coordinates).
        protocol: "official" (bone rescaling to the GT lengths via the 17-joint completion) or "plain".
    """
    if mode not in ("relative", "absolute"):
        raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
    if protocol not in ("official", "plain"):
        raise ValueError(f"protocol must be 'official' or 'plain', got {protocol!r}")
    pred, gt = pred_poses.double(), gt_poses.double()
    if mode == "relative":
        pred = pred - pred[..., ROOT : ROOT + 1, :]
        gt = gt - gt[..., ROOT : ROOT + 1, :]
    if protocol == "official":
        pred = rescale_bones_to_gt(complete_to_mupots17(pred), complete_to_mupots17(gt))[..., list(OURS_IN_MUPOTS17), :]
    return (pred - gt).norm(dim=-1)


# ----------------------------------------------------------------------------------------------- helpers
def _scatter_people(values: torch.Tensor, seq: torch.Tensor, weight: torch.Tensor, num_sequences: int) -> torch.Tensor:
    """Sum per-person ``values`` (B, G, ...) weighted by (B, G) into (S, ...) float64 by sequence."""
    b, g = weight.shape
    flat = (values.double() * weight.double().view(b, g, *([1] * (values.ndim - 2)))).reshape(b * g, *values.shape[2:])
    out = torch.zeros((num_sequences, *values.shape[2:]), dtype=torch.float64, device=values.device)
    return out.index_add_(0, seq.repeat_interleave(g), flat)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with NaN where den == 0."""
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.full_like(num, float("nan")))


def _seq_mean(per_seq: torch.Tensor) -> torch.Tensor:
    """Mean over the sequences that have data (non-NaN)."""
    return per_seq.nanmean() if (~per_seq.isnan()).any() else per_seq.new_tensor(float("nan"))


def auc(correct_fraction: torch.Tensor) -> torch.Tensor:
    """AUC of a PCK curve sampled at equally spaced thresholds: (..., T) fractions -> (...), their mean."""
    return correct_fraction.mean(-1)


def _group_values(
    per_joint_num: torch.Tensor, per_joint_den: torch.Tensor, joints: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Per joint group ratio of summed numerators and denominators over the group's joints that are in ``joints``."""
    out = {}
    for name, members in JOINT_GROUPS.items():
        sel = [j for j in members if j in joints]
        if sel:
            out[name] = _ratio(per_joint_num[..., sel].sum(-1), per_joint_den[..., sel].sum(-1))
    return out


# ----------------------------------------------------------------------------------------------- 3DPCK
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
    pred_poses: torch.Tensor,
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_poses: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    thresholds: tuple[float, ...],
    mode: str = "relative",
    protocol: str = "official",
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
) -> PCK3DStats:
    seq = _check_people(pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence, num_sequences)
    m = _match(pred_2d, pred_mask, gt_2d, gt_mask, matching, match_threshold_px)
    err = pose_errors_3d(gather_matched(pred_poses, m), gt_poses, mode, protocol)  # (B, G, J)
    err = torch.where(m.matched[..., None], err, torch.full_like(err, UNMATCHED_ERROR))
    th = err.new_tensor(thresholds)
    hit = (err[:, :, None, :] < th[:, None]).double()  # (B, G, T, J)
    return PCK3DStats(
        correct=_scatter_people(hit, seq, gt_mask & m.matched, num_sequences),
        people_all=_scatter_people(torch.ones_like(err[..., 0]), seq, gt_mask, num_sequences),
        people_matched=_scatter_people(torch.ones_like(err[..., 0]), seq, gt_mask & m.matched, num_sequences),
    )


def _pck3d_compute(stats: PCK3DStats, joints: tuple[int, ...] = SCORED_JOINTS) -> PCK3DResult:
    """Stats with thresholds (main, *AUC thresholds) -> PCK3DResult."""
    sel = list(joints)
    correct = stats.correct[..., sel].sum(-1)  # (S, T)
    nj = len(sel)
    seq_all = _ratio(correct, stats.people_all[:, None] * nj)  # (S, T)
    seq_matched = _ratio(correct, stats.people_matched[:, None] * nj)
    pooled = stats.correct.sum(0)  # (T, J)
    n_all, n_matched = stats.people_all.sum(), stats.people_matched.sum()
    per_joint = _ratio(pooled[0], n_all.expand(NUM_JOINTS))
    unscored = torch.ones(NUM_JOINTS, dtype=torch.bool, device=per_joint.device)
    unscored[sel] = False
    per_joint = per_joint.masked_fill(unscored, float("nan"))
    return PCK3DResult(
        pck_all=_seq_mean(seq_all[:, 0]),
        pck_matched=_seq_mean(seq_matched[:, 0]),
        auc_all=_seq_mean(auc(seq_all[:, 1:])),
        auc_matched=_seq_mean(auc(seq_matched[:, 1:])),
        pck_all_pooled=_ratio(pooled[0, sel].sum(), n_all * nj),
        pck_matched_pooled=_ratio(pooled[0, sel].sum(), n_matched * nj),
        per_sequence_all=seq_all[:, 0],
        per_sequence_matched=seq_matched[:, 0],
        per_joint_all=per_joint,
        per_group_all=_group_values(pooled[0], n_all.expand(NUM_JOINTS), joints),
        per_group_matched=_group_values(pooled[0], n_matched.expand(NUM_JOINTS), joints),
        detection_rate=_ratio(n_matched, n_all),
    )


def pck3d(
    pred_poses: torch.Tensor,
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_poses: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    threshold: float = PCK3D_THRESHOLD_MM,
    mode: str = "relative",
    protocol: str = "official",
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
    joints: tuple[int, ...] = SCORED_JOINTS,
) -> PCK3DResult:
    """3DPCK (MuPoTS-3D protocol; see the module docstring): a joint is correct if its error is below ``threshold``.

    Args:
        pred_poses: (B, P, 15, 3) millimetres, camera frame. pred_2d: (B, P, 15, 2) pixels. pred_mask: (B, P) bool.
        gt_poses: (B, G, 15, 3) millimetres. gt_2d: (B, G, 15, 2) pixels. gt_mask: (B, G) bool.
        sequence: (B,) long sequence index or None.
        threshold: 150 mm (3DPCK_rel and the official absolute mode) or 250 mm (the paper's 3DPCK_abs).
        mode: "relative" or "absolute". protocol: "official" (bone rescaling) or "plain".
        matching: "2d" (official matching at ``match_threshold_px``) or "index" (already paired).
        joints: the scored joints (default MuPoTS 0..13 = all of ours but the pelvis).

    Returns:
        PCK3DResult (fractions in [0, 1]).
    """
    stats = _pck3d_update(
        pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence,
        thresholds=(threshold, *AUC_THRESHOLDS_MM), mode=mode, protocol=protocol, num_sequences=num_sequences,
        match_threshold_px=match_threshold_px, matching=matching,
    )  # fmt: skip
    return _pck3d_compute(stats, joints)


# ----------------------------------------------------------------------------------------------- MPJPE / PA-MPJPE
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
    pred_poses: torch.Tensor,
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_poses: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    align: str = "root",
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
) -> MPJPEStats:
    seq = _check_people(pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence, num_sequences)
    m = _match(pred_2d, pred_mask, gt_2d, gt_mask, matching, match_threshold_px)
    pred, gt = gather_matched(pred_poses, m).double(), gt_poses.double()
    if align == "root":
        pred, gt = pred - pred[..., ROOT : ROOT + 1, :], gt - gt[..., ROOT : ROOT + 1, :]
    elif align == "procrustes":
        pred = procrustes_align(pred, gt, scale=True).aligned
    elif align != "none":
        raise ValueError(f"align must be 'root', 'procrustes' or 'none', got {align!r}")
    err = (pred - gt).norm(dim=-1)  # (B, G, J)
    w = gt_mask & m.matched
    err = torch.where(w[..., None], err, torch.zeros_like(err))  # NaN-safe for unmatched padding
    return MPJPEStats(
        _scatter_people(err, seq, w, num_sequences),
        _scatter_people(torch.ones_like(err[..., 0]), seq, w, num_sequences),
    )


def _mpjpe_compute(stats: MPJPEStats, joints: tuple[int, ...] | None = None) -> MPJPEResult:
    sel = list(range(NUM_JOINTS)) if joints is None else list(joints)
    per_seq = _ratio(stats.error_sum[:, sel].sum(-1), stats.people * len(sel))
    n = stats.people.sum()
    pooled = stats.error_sum.sum(0)  # (J,)
    return MPJPEResult(
        mpjpe=_ratio(pooled[sel].sum(), n * len(sel)),
        mean_over_sequences=_seq_mean(per_seq),
        per_sequence=per_seq,
        per_joint=_ratio(pooled, n.expand(NUM_JOINTS)),
        per_group=_group_values(pooled, n.expand(NUM_JOINTS), tuple(sel)),
    )


def mpjpe(
    pred_poses: torch.Tensor,
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_poses: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    root_align: bool = True,
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
    joints: tuple[int, ...] | None = None,
) -> MPJPEResult:
    """MPJPE in millimetres over matched GT people (after pelvis alignment unless ``root_align=False``).

    Same inputs as ``pck3d``. ``joints`` None averages all 15 joints (the Human3.6M convention, root included).
    """
    stats = _mpjpe_update(
        pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence, align="root" if root_align else "none",
        num_sequences=num_sequences, match_threshold_px=match_threshold_px, matching=matching,
    )  # fmt: skip
    return _mpjpe_compute(stats, joints)


def pa_mpjpe(
    pred_poses: torch.Tensor,
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_poses: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
    joints: tuple[int, ...] | None = None,
) -> MPJPEResult:
    """PA-MPJPE (mm): MPJPE after a least-squares similarity (rotation, translation, scale) alignment of each person.

    Uses ``geometry.procrustes_align`` (not torchmetrics' ProcrustesDisparity, which normalises the scale).
    """
    stats = _mpjpe_update(
        pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence, align="procrustes",
        num_sequences=num_sequences, match_threshold_px=match_threshold_px, matching=matching,
    )  # fmt: skip
    return _mpjpe_compute(stats, joints)


# ----------------------------------------------------------------------------------------------- 2D metrics
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
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    threshold_px: float = PCK2D_THRESHOLD_PX,
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
) -> PCK2DStats:
    seq = _check_people(None, pred_2d, pred_mask, None, gt_2d, gt_mask, sequence, num_sequences)
    m = _match(pred_2d, pred_mask, gt_2d, gt_mask, matching, match_threshold_px)
    err = (gather_matched(pred_2d, m).double() - gt_2d.double()).norm(dim=-1)  # (B, G, J)
    w = gt_mask & m.matched
    err = torch.where(w[..., None], err, torch.zeros_like(err))
    ones = torch.ones_like(err[..., 0])
    return PCK2DStats(
        correct=_scatter_people((err < threshold_px).double(), seq, w, num_sequences),
        error_sum=_scatter_people(err, seq, w, num_sequences),
        people_all=_scatter_people(ones, seq, gt_mask, num_sequences),
        people_matched=_scatter_people(ones, seq, w, num_sequences),
    )


def _pck2d_compute(stats: PCK2DStats) -> PCK2DResult:
    n_all, n_m = stats.people_all.sum(), stats.people_matched.sum()
    correct = stats.correct.sum(0)
    return PCK2DResult(
        pck_all=_ratio(correct.sum(), n_all * NUM_JOINTS),
        pck_matched=_ratio(correct.sum(), n_m * NUM_JOINTS),
        mpjpe_2d=_ratio(stats.error_sum.sum(), n_m * NUM_JOINTS),
        per_sequence_all=_ratio(stats.correct.sum(-1), stats.people_all * NUM_JOINTS),
        per_group_all=_group_values(correct, n_all.expand(NUM_JOINTS), tuple(range(NUM_JOINTS))),
    )


def pck2d(
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    threshold_px: float = PCK2D_THRESHOLD_PX,
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
) -> PCK2DResult:
    """2D PCK (a joint is correct within ``threshold_px``, 25 px in the paper) and 2D-MPJPE over all 15 joints."""
    stats = _pck2d_update(
        pred_2d, pred_mask, gt_2d, gt_mask, sequence, threshold_px=threshold_px, num_sequences=num_sequences,
        match_threshold_px=match_threshold_px, matching=matching,
    )  # fmt: skip
    return _pck2d_compute(stats)


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
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
) -> BoxIoUStats:
    seq = _check_people(None, pred_2d, pred_mask, None, gt_2d, gt_mask, sequence, num_sequences)
    m = _match(pred_2d, pred_mask, gt_2d, gt_mask, matching, match_threshold_px)
    iou = box_iou_pairs(pose_boxes(gather_matched(pred_2d, m).double()), pose_boxes(gt_2d.double()))  # (B, G)
    w = gt_mask & m.matched
    ones = torch.ones_like(iou)
    return BoxIoUStats(
        _scatter_people(iou, seq, w, num_sequences),
        _scatter_people(ones, seq, gt_mask, num_sequences),
        _scatter_people(ones, seq, w, num_sequences),
    )


def _box_iou_compute(stats: BoxIoUStats) -> BoxIoUResult:
    s = stats.iou_sum.sum()
    return BoxIoUResult(
        iou_matched=_ratio(s, stats.people_matched.sum()),
        iou_all=_ratio(s, stats.people_all.sum()),
        per_sequence_matched=_ratio(stats.iou_sum, stats.people_matched),
    )


def box_iou(
    pred_2d: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    sequence: torch.Tensor | None = None,
    *,
    num_sequences: int = 1,
    match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
    matching: str = "2d",
) -> BoxIoUResult:
    """Bounding-box IoU of people (paper suppl. 4 b): boxes are the tight boxes of the 15 2D joints."""
    stats = _box_iou_update(
        pred_2d, pred_mask, gt_2d, gt_mask, sequence, num_sequences=num_sequences,
        match_threshold_px=match_threshold_px, matching=matching,
    )  # fmt: skip
    return _box_iou_compute(stats)


# ----------------------------------------------------------------------------------------------- AP_root
class APRootStats(NamedTuple):
    """Per-prediction confidences and TP flags (flattened), and the GT count."""

    scores: torch.Tensor  # (N,) float64
    true_positive: torch.Tensor  # (N,) float64 0/1
    num_gt: torch.Tensor  # () float64


def _ap_root_update(
    pred_roots: torch.Tensor,
    pred_scores: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_roots: torch.Tensor,
    gt_mask: torch.Tensor,
    threshold_mm: float = AP_ROOT_THRESHOLD_MM,
) -> APRootStats:
    if pred_roots.ndim != 3 or pred_roots.shape[-1] != 3 or gt_roots.ndim != 3 or gt_roots.shape[-1] != 3:
        raise ValueError(
            f"pred_roots and gt_roots must be (B, P, 3) and (B, G, 3) mm, "
            f"got {tuple(pred_roots.shape)}, {tuple(gt_roots.shape)}"
        )
    b, p = pred_roots.shape[:2]
    g = gt_roots.shape[1]
    if pred_scores.shape != (b, p) or pred_mask.shape != (b, p) or gt_mask.shape != (b, g) or gt_roots.shape[0] != b:
        raise ValueError(f"pred_scores/pred_mask must be (B, P) = {(b, p)} and gt_mask (B, G) = {(b, g)}")
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


def ap_root(
    pred_roots: torch.Tensor,
    pred_scores: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_roots: torch.Tensor,
    gt_mask: torch.Tensor,
    threshold_mm: float = AP_ROOT_THRESHOLD_MM,
) -> torch.Tensor:
    """AP_root (RootNet, Moon et al.): AP of root localisation, a prediction is a TP within ``threshold_mm`` (25 cm).

    Per frame, predictions in decreasing confidence take the nearest still-free GT root; AP is the area under the
    precision-recall curve with the all-point monotone envelope.

    Args:
        pred_roots: (B, P, 3) mm, camera frame. pred_scores: (B, P) confidence. pred_mask: (B, P) bool.
        gt_roots: (B, G, 3) mm. gt_mask: (B, G) bool.

    Returns:
        () AP in [0, 1] (NaN without GT).
    """
    return _ap_root_compute(_ap_root_update(pred_roots, pred_scores, pred_mask, gt_roots, gt_mask, threshold_mm))
