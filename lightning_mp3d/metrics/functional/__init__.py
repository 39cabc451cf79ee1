"""Functional core of the pose metrics (pure tensors, no Lightning), one module per concern, torchmetrics' layout.

- ``people``: ``PeopleBatch`` (the input of every person metric), its checks, and ``matched_people`` (check -> match
  -> GT order) with the per-sequence sums and ratios every metric shares.
- ``matching``: the official MuPoTS-3D person matching, index matching, and ``MatchSpec`` (which one, at what
  threshold).
- ``mupots``: the MuPoTS-3D 3D protocol (scored joints, thresholds, 17-joint completion, bone rescaling).
- ``pck3d``, ``mpjpe`` (MPJPE and PA-MPJPE), ``pck2d`` (2D PCK and 2D-MPJPE), ``box_iou``, ``ap_root``: one file per
  metric. Each has ``_x_update`` (checks and sufficient statistics: sums and counts per sequence, float64),
  ``_x_compute`` (statistics -> a result NamedTuple) and the public ``x(people, ...)`` chaining both; the
  ``torchmetrics.Metric`` classes in ``metrics/pose.py`` only declare those statistics as states. ``ap_root`` takes
  roots and confidences instead of people: ``ap_root(RootsBatch(...))``.
"""

from lightning_mp3d.metrics.functional.ap_root import AP_ROOT_THRESHOLD_MM, APRootStats, RootsBatch, ap_root
from lightning_mp3d.metrics.functional.box_iou import BoxIoUResult, BoxIoUStats, box_iou, box_iou_pairs, pose_boxes
from lightning_mp3d.metrics.functional.matching import (
    MATCH_THRESHOLD_PX_224,
    MATCHING_JOINTS,
    OFFICIAL_MATCH_THRESHOLD_PX,
    OFFICIAL_MATCHING,
    Matching,
    MatchSpec,
    gather_matched,
    index_matching,
    match_people,
)
from lightning_mp3d.metrics.functional.mpjpe import MPJPEResult, MPJPEStats, mpjpe, pa_mpjpe
from lightning_mp3d.metrics.functional.mupots import (
    AUC_THRESHOLDS_MM,
    PCK3D_ABS_THRESHOLD_MM,
    PCK3D_THRESHOLD_MM,
    SCORED_JOINTS,
    auc,
    complete_to_mupots17,
    pose_errors_3d,
    rescale_bones_to_gt,
)
from lightning_mp3d.metrics.functional.pck2d import PCK2D_THRESHOLD_PX, PCK2DResult, PCK2DStats, pck2d
from lightning_mp3d.metrics.functional.pck3d import PCK3DResult, PCK3DStats, pck3d
from lightning_mp3d.metrics.functional.people import MatchedPeople, PeopleBatch, matched_people

__all__ = [
    "AP_ROOT_THRESHOLD_MM",
    "AUC_THRESHOLDS_MM",
    "MATCHING_JOINTS",
    "MATCH_THRESHOLD_PX_224",
    "OFFICIAL_MATCHING",
    "OFFICIAL_MATCH_THRESHOLD_PX",
    "PCK2D_THRESHOLD_PX",
    "PCK3D_ABS_THRESHOLD_MM",
    "PCK3D_THRESHOLD_MM",
    "SCORED_JOINTS",
    "APRootStats",
    "BoxIoUResult",
    "BoxIoUStats",
    "MPJPEResult",
    "MPJPEStats",
    "MatchSpec",
    "MatchedPeople",
    "Matching",
    "PCK2DResult",
    "PCK2DStats",
    "PCK3DResult",
    "PCK3DStats",
    "PeopleBatch",
    "RootsBatch",
    "ap_root",
    "auc",
    "box_iou",
    "box_iou_pairs",
    "complete_to_mupots17",
    "gather_matched",
    "index_matching",
    "match_people",
    "matched_people",
    "mpjpe",
    "pa_mpjpe",
    "pck2d",
    "pck3d",
    "pose_boxes",
    "pose_errors_3d",
    "rescale_bones_to_gt",
]
