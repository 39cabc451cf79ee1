"""torchmetrics wrappers of the functional pose metrics: they only declare sum states and call the functional core.

Every class takes batches of frames with padded people (see ``metrics/functional.py``)::

    metric.update(pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence)

(2D-only metrics ignore the 3D arguments), keeps per-sequence sums and counts reduced with ``"sum"`` across DDP
ranks (``APRoot`` keeps per-prediction lists reduced with ``"cat"``), and ``compute()`` returns the functional
result NamedTuple (``.as_dict(prefix)`` flattens it for ``self.log_dict``). One instance per split.
"""

from __future__ import annotations

import abc

import torch
from torchmetrics import Metric

from lightning_mp3d.metrics import functional as F
from lightning_mp3d.metrics.functional import (
    AUC_THRESHOLDS_MM,
    OFFICIAL_MATCH_THRESHOLD_PX,
    PCK2D_THRESHOLD_PX,
    PCK3D_THRESHOLD_MM,
    SCORED_JOINTS,
)
from lightning_mp3d.skeleton import NUM_JOINTS


class _PersonMetric(Metric):
    """Shared constructor arguments of the person-level metrics."""

    full_state_update = False
    higher_is_better: bool | None = None
    is_differentiable = False

    def __init__(
        self,
        num_sequences: int = 1,
        match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
        matching: str = "2d",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_sequences < 1:
            raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
        if matching not in ("2d", "index"):
            raise ValueError(f"matching must be '2d' or 'index', got {matching!r}")
        if match_threshold_px <= 0:
            raise ValueError(f"match_threshold_px must be positive, got {match_threshold_px}")
        self.num_sequences = num_sequences
        self.match_threshold_px = float(match_threshold_px)
        self.matching = matching

    def _sum_state(self, name: str, *shape: int) -> None:
        self.add_state(name, default=torch.zeros(*shape, dtype=torch.float64), dist_reduce_fx="sum")

    @property
    def _match_kwargs(self) -> dict:
        return {
            "num_sequences": self.num_sequences,
            "match_threshold_px": self.match_threshold_px,
            "matching": self.matching,
        }

    def update(
        self,
        pred_poses: torch.Tensor | None,
        pred_2d: torch.Tensor,
        pred_mask: torch.Tensor,
        gt_poses: torch.Tensor | None,
        gt_2d: torch.Tensor,
        gt_mask: torch.Tensor,
        sequence: torch.Tensor | None = None,
    ) -> None:
        """Accumulate a batch of frames; shapes as in ``functional`` (2D-only metrics ignore the 3D arguments).

        Each state is the same-named field of the batch's sufficient statistics, added in place.
        """
        stats = self._batch_stats(pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence)
        for name, value in stats._asdict().items():
            setattr(self, name, getattr(self, name) + value)

    @abc.abstractmethod
    def _batch_stats(self, pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence) -> tuple:
        """The functional ``_*_update`` of this metric: a stats NamedTuple whose fields name the states."""

    def _state_stats(self, stats_type: type) -> tuple:
        """The accumulated states as a stats NamedTuple of ``stats_type``."""
        return stats_type(*(getattr(self, field) for field in stats_type._fields))


class PCK3D(_PersonMetric):
    """3DPCK on the MuPoTS-3D protocol: 'all' (unmatched GT = 0) and 'matched', AUC 0:5:150 mm, per group and sequence.

    Args:
        threshold: 150 mm (3DPCK_rel; also the official script's absolute mode) or 250 mm (the paper's 3DPCK_abs).
        mode: "relative" (pelvis-centred) or "absolute" (camera coordinates).
        protocol: "official" (bone rescaling to the GT, with the 17-joint completion) or "plain".
        num_sequences: length of the per-sequence breakdown (20 for MuPoTS-3D); ``sequence`` indexes it.
        match_threshold_px: matching box half-size (40 px full-res; ``MATCH_THRESHOLD_PX_224`` at 224 px).
        matching: "2d" (official matching) or "index" (prediction g is GT g).
        joints: scored joints (default: all but the pelvis = MuPoTS 0..13).
    """

    higher_is_better = True

    def __init__(
        self,
        threshold: float = PCK3D_THRESHOLD_MM,
        mode: str = "relative",
        protocol: str = "official",
        num_sequences: int = 1,
        match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
        matching: str = "2d",
        joints: tuple[int, ...] = SCORED_JOINTS,
        **kwargs,
    ) -> None:
        super().__init__(num_sequences, match_threshold_px, matching, **kwargs)
        if mode not in ("relative", "absolute"):
            raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
        if protocol not in ("official", "plain"):
            raise ValueError(f"protocol must be 'official' or 'plain', got {protocol!r}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive (mm), got {threshold}")
        self.thresholds = (float(threshold), *AUC_THRESHOLDS_MM)
        self.mode, self.protocol, self.joints = mode, protocol, tuple(joints)
        self._sum_state("correct", num_sequences, len(self.thresholds), NUM_JOINTS)
        self._sum_state("people_all", num_sequences)
        self._sum_state("people_matched", num_sequences)

    def _batch_stats(self, pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence) -> tuple:
        return F._pck3d_update(
            pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence,
            thresholds=self.thresholds, mode=self.mode, protocol=self.protocol, **self._match_kwargs,
        )  # fmt: skip

    def compute(self) -> F.PCK3DResult:
        """PCK3DResult over everything accumulated (on all ranks)."""
        return F._pck3d_compute(self._state_stats(F.PCK3DStats), self.joints)


class _MPJPEBase(_PersonMetric):
    higher_is_better = False
    _align = "root"

    def __init__(
        self,
        num_sequences: int = 1,
        match_threshold_px: float = OFFICIAL_MATCH_THRESHOLD_PX,
        matching: str = "2d",
        joints: tuple[int, ...] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(num_sequences, match_threshold_px, matching, **kwargs)
        self.joints = None if joints is None else tuple(joints)
        self._sum_state("error_sum", num_sequences, NUM_JOINTS)
        self._sum_state("people", num_sequences)

    def _batch_stats(self, pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence) -> tuple:
        return F._mpjpe_update(
            pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence, align=self._align, **self._match_kwargs
        )

    def compute(self) -> F.MPJPEResult:
        """MPJPEResult (mm) over the matched people accumulated on all ranks."""
        return F._mpjpe_compute(self._state_stats(F.MPJPEStats), self.joints)


class MPJPE(_MPJPEBase):
    """MPJPE (mm) over matched GT people; ``root_align`` (default) centres both poses on the pelvis first.

    ``joints=None`` averages all 15 joints (Human3.6M convention); per-sequence values are per action on Human3.6M.
    """

    def __init__(self, root_align: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root_align = root_align
        self._align = "root" if root_align else "none"


class PAMPJPE(_MPJPEBase):
    """PA-MPJPE (mm): MPJPE after a per-person similarity Procrustes alignment (``geometry.procrustes_align``)."""

    _align = "procrustes"


class PCK2D(_PersonMetric):
    """2D PCK at ``threshold_px`` (25 px) over all / matched GT people, and 2D-MPJPE (px) over matched people.

    ``update`` takes the same arguments as ``PCK3D`` (the 3D ones may be None).
    """

    higher_is_better = True

    def __init__(self, threshold_px: float = PCK2D_THRESHOLD_PX, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold_px = float(threshold_px)
        self._sum_state("correct", self.num_sequences, NUM_JOINTS)
        self._sum_state("error_sum", self.num_sequences, NUM_JOINTS)
        self._sum_state("people_all", self.num_sequences)
        self._sum_state("people_matched", self.num_sequences)

    def _batch_stats(self, pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence) -> tuple:
        return F._pck2d_update(
            pred_2d, pred_mask, gt_2d, gt_mask, sequence, threshold_px=self.threshold_px, **self._match_kwargs
        )

    def compute(self) -> F.PCK2DResult:
        """PCK2DResult over everything accumulated."""
        return F._pck2d_compute(self._state_stats(F.PCK2DStats))


class BoxIoU(_PersonMetric):
    """Mean IoU of the tight 2D-joint boxes of matched people (and over all GT people, unmatched = 0)."""

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sum_state("iou_sum", self.num_sequences)
        self._sum_state("people_all", self.num_sequences)
        self._sum_state("people_matched", self.num_sequences)

    def _batch_stats(self, pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence) -> tuple:
        return F._box_iou_update(pred_2d, pred_mask, gt_2d, gt_mask, sequence, **self._match_kwargs)

    def compute(self) -> F.BoxIoUResult:
        """BoxIoUResult over everything accumulated."""
        return F._box_iou_compute(self._state_stats(F.BoxIoUStats))


class APRoot(Metric):
    """AP_root (RootNet): average precision of root localisation within ``threshold_mm`` (250 mm = 25 cm).

    ``update(pred_roots (B, P, 3) mm, pred_scores (B, P), pred_mask (B, P), gt_roots (B, G, 3) mm, gt_mask (B, G))``.
    States are per-prediction lists (``"cat"``) because AP needs the global confidence order.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, threshold_mm: float = F.AP_ROOT_THRESHOLD_MM, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold_mm = float(threshold_mm)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("true_positive", default=[], dist_reduce_fx="cat")
        self.add_state("num_gt", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        pred_roots: torch.Tensor,
        pred_scores: torch.Tensor,
        pred_mask: torch.Tensor,
        gt_roots: torch.Tensor,
        gt_mask: torch.Tensor,
    ) -> None:
        """Accumulate a batch of frames."""
        s = F._ap_root_update(pred_roots, pred_scores, pred_mask, gt_roots, gt_mask, self.threshold_mm)
        self.scores.append(s.scores)
        self.true_positive.append(s.true_positive)
        self.num_gt += s.num_gt

    def compute(self) -> torch.Tensor:
        """() AP in [0, 1]."""
        return F._ap_root_compute(F.APRootStats(_cat(self.scores), _cat(self.true_positive), self.num_gt))


def _cat(x: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A list state (before sync) or an already concatenated tensor (after a DDP sync) as one tensor."""
    if isinstance(x, list):
        return torch.cat(x) if x else torch.zeros(0, dtype=torch.float64)
    return x
