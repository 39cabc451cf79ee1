"""The MuPoTS-3D 3D protocol: scored joints, thresholds, 17-joint completion, bone rescaling, per-joint errors.

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
"""

from __future__ import annotations

import torch

from lightning_mp3d.skeleton import NUM_JOINTS, ROOT

# MuPoTS 0..13 (the 14 joints the official script scores): every joint but the pelvis.
SCORED_JOINTS: tuple[int, ...] = tuple(range(1, NUM_JOINTS))
PCK3D_THRESHOLD_MM = 150.0
PCK3D_ABS_THRESHOLD_MM = 250.0
AUC_THRESHOLDS_MM: tuple[float, ...] = tuple(float(t) for t in range(0, 151, 5))
UNMATCHED_ERROR = 1e5  # what the official script writes for an unmatched GT person: every joint wrong

# MuPoTS 17-joint tree (0-based parents, pelvis = 14 is its own parent) and the official traversal without the
# pelvis (``safe_traversal_order(2:end)``).
MUPOTS17_PARENTS: tuple[int, ...] = (1, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, 14, 14, 1)
MUPOTS17_TRAVERSAL: tuple[int, ...] = (15, 1, 0, 16, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
# ours -> MuPoTS 17 positions: ours[k] is MuPoTS joint OURS_IN_MUPOTS17[k].
OURS_IN_MUPOTS17: tuple[int, ...] = (14, 1, 0, 2, 5, 3, 6, 4, 7, 8, 11, 9, 12, 10, 13)

_EPS = 1e-8


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
    check_protocol(mode, protocol)
    pred, gt = pred_poses.double(), gt_poses.double()
    if mode == "relative":
        pred = pred - pred[..., ROOT : ROOT + 1, :]
        gt = gt - gt[..., ROOT : ROOT + 1, :]
    if protocol == "official":
        pred = rescale_bones_to_gt(complete_to_mupots17(pred), complete_to_mupots17(gt))[..., list(OURS_IN_MUPOTS17), :]
    return (pred - gt).norm(dim=-1)


def check_protocol(mode: str, protocol: str) -> None:
    """Raise a ValueError naming ``mode`` or ``protocol`` when it is not one of the protocol's choices."""
    if mode not in ("relative", "absolute"):
        raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
    if protocol not in ("official", "plain"):
        raise ValueError(f"protocol must be 'official' or 'plain', got {protocol!r}")


def auc(correct_fraction: torch.Tensor) -> torch.Tensor:
    """AUC of a PCK curve sampled at equally spaced thresholds: (..., T) fractions -> (...), their mean."""
    return correct_fraction.mean(-1)
