"""torchmetrics wrappers of the functional pose metrics: they only declare sum states and call the functional core.

Every person metric takes a batch of frames with padded people (``functional.PeopleBatch``)::

    metric.update(PeopleBatch(pred_poses, pred_2d, pred_mask, gt_poses, gt_2d, gt_mask, sequence))

(2D-only metrics ignore the 3D fields), keeps per-sequence sums and counts reduced with ``"sum"`` across DDP ranks
(``APRoot`` keeps per-prediction lists reduced with ``"cat"``), and ``compute()`` returns the functional result
NamedTuple (``.as_dict(prefix)`` flattens it for ``self.log_dict``). One instance per split. ``gt_variant`` says
which MuPoTS GT the metric's ``gt_poses`` should be: ``"univ_annot3"`` for the official (bone-rescaling) 3DPCK,
``"annot3"`` (camera coordinates) for every other metric.
"""

from __future__ import annotations

import abc
from typing import Literal, NamedTuple

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_mp3d.metrics.functional.ap_root import (
    AP_ROOT_THRESHOLD_MM,
    APRootStats,
    RootsBatch,
    _ap_root_compute,
    _ap_root_update,
)
from lightning_mp3d.metrics.functional.box_iou import BoxIoUResult, BoxIoUStats, _box_iou_compute, _box_iou_update
from lightning_mp3d.metrics.functional.matching import OFFICIAL_MATCHING, MatchSpec
from lightning_mp3d.metrics.functional.mpjpe import MPJPEResult, MPJPEStats, _mpjpe_compute, _mpjpe_update
from lightning_mp3d.metrics.functional.mupots import (
    AUC_THRESHOLDS_MM,
    PCK3D_THRESHOLD_MM,
    SCORED_JOINTS,
    check_protocol,
)
from lightning_mp3d.metrics.functional.pck2d import (
    PCK2D_THRESHOLD_PX,
    PCK2DResult,
    PCK2DStats,
    _pck2d_compute,
    _pck2d_update,
)
from lightning_mp3d.metrics.functional.pck3d import PCK3DResult, PCK3DStats, _pck3d_compute, _pck3d_update
from lightning_mp3d.metrics.functional.people import PeopleBatch
from lightning_mp3d.skeleton import NUM_JOINTS

GTVariant = Literal["annot3", "univ_annot3"]


class _PersonMetric(Metric):
    """A metric of matched people: per-sequence sum states named by the fields of its ``_stats`` NamedTuple.

    Args:
        num_sequences: length of the per-sequence breakdown (20 for MuPoTS-3D); ``PeopleBatch.sequence`` indexes it.
        match: how predictions pair with GT people (default: the official 2D matching at 40 px, full resolution).
    """

    full_state_update = False
    higher_is_better: bool | None = None
    is_differentiable = False
    gt_variant: GTVariant = "annot3"
    _stats: type[NamedTuple]

    def __init__(self, num_sequences: int = 1, match: MatchSpec = OFFICIAL_MATCHING, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_sequences < 1:
            raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
        if not isinstance(match, MatchSpec):
            raise TypeError(f"match must be a MatchSpec, got {type(match).__name__}")
        self.num_sequences = num_sequences
        self.match = match

    def _sum_state(self, name: str, *shape: int) -> None:
        self.add_state(name, default=torch.zeros(*shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, people: PeopleBatch) -> None:
        """Accumulate a batch of frames: each state is the same-named field of the batch's statistics, added."""
        stats = self._batch_stats(people)
        for name, value in stats._asdict().items():
            setattr(self, name, getattr(self, name) + value)

    @abc.abstractmethod
    def _batch_stats(self, people: PeopleBatch) -> tuple:
        """The functional ``_*_update`` of this metric: a ``_stats`` NamedTuple whose fields name the states."""

    def _state_stats(self) -> tuple:
        """The accumulated states as a ``_stats`` NamedTuple."""
        return self._stats(*(getattr(self, field) for field in self._stats._fields))


class PCK3D(_PersonMetric):
    """3DPCK on the MuPoTS-3D protocol: 'all' (unmatched GT = 0) and 'matched', AUC 0:5:150 mm, per group and sequence.

    Args:
        threshold: 150 mm (3DPCK_rel; also the official script's absolute mode) or 250 mm (the paper's 3DPCK_abs).
        mode: "relative" (pelvis-centred) or "absolute" (camera coordinates).
        protocol: "official" (bone rescaling to the GT, with the 17-joint completion; ``gt_variant`` is then
            ``"univ_annot3"``) or "plain" (``"annot3"``).
        joints: scored joints (default: all but the pelvis = MuPoTS 0..13).
        num_sequences, match: as every person metric (``_PersonMetric``).
    """

    higher_is_better = True
    _stats = PCK3DStats

    def __init__(
        self,
        threshold: float = PCK3D_THRESHOLD_MM,
        mode: str = "relative",
        protocol: str = "official",
        joints: tuple[int, ...] = SCORED_JOINTS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_protocol(mode, protocol)
        if threshold <= 0:
            raise ValueError(f"threshold must be positive (mm), got {threshold}")
        self.thresholds = (float(threshold), *AUC_THRESHOLDS_MM)
        self.mode, self.protocol, self.joints = mode, protocol, tuple(joints)
        self._sum_state("correct", self.num_sequences, len(self.thresholds), NUM_JOINTS)
        self._sum_state("people_all", self.num_sequences)
        self._sum_state("people_matched", self.num_sequences)

    @property
    def gt_variant(self) -> GTVariant:
        """The official protocol rescales bones to MuPoTS's universal skeleton (``univ_annot3``)."""
        return "univ_annot3" if self.protocol == "official" else "annot3"

    def _batch_stats(self, people: PeopleBatch) -> tuple:
        return _pck3d_update(
            people, thresholds=self.thresholds, mode=self.mode, protocol=self.protocol, match=self.match,
            num_sequences=self.num_sequences,
        )  # fmt: skip

    def compute(self) -> PCK3DResult:
        """PCK3DResult over everything accumulated (on all ranks)."""
        return _pck3d_compute(self._state_stats(), self.joints)


class _MPJPEBase(_PersonMetric):
    higher_is_better = False
    _stats = MPJPEStats
    _align = "root"

    def __init__(self, joints: tuple[int, ...] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.joints = None if joints is None else tuple(joints)
        self._sum_state("error_sum", self.num_sequences, NUM_JOINTS)
        self._sum_state("people", self.num_sequences)

    def _batch_stats(self, people: PeopleBatch) -> tuple:
        return _mpjpe_update(people, align=self._align, match=self.match, num_sequences=self.num_sequences)

    def compute(self) -> MPJPEResult:
        """MPJPEResult (mm) over the matched people accumulated on all ranks."""
        return _mpjpe_compute(self._state_stats(), self.joints)


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

    ``update`` takes a ``PeopleBatch`` like ``PCK3D`` (its 3D fields may be None).
    """

    higher_is_better = True
    _stats = PCK2DStats

    def __init__(self, threshold_px: float = PCK2D_THRESHOLD_PX, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold_px = float(threshold_px)
        self._sum_state("correct", self.num_sequences, NUM_JOINTS)
        self._sum_state("error_sum", self.num_sequences, NUM_JOINTS)
        self._sum_state("people_all", self.num_sequences)
        self._sum_state("people_matched", self.num_sequences)

    def _batch_stats(self, people: PeopleBatch) -> tuple:
        return _pck2d_update(people, threshold_px=self.threshold_px, match=self.match, num_sequences=self.num_sequences)

    def compute(self) -> PCK2DResult:
        """PCK2DResult over everything accumulated."""
        return _pck2d_compute(self._state_stats())


class BoxIoU(_PersonMetric):
    """Mean IoU of the tight 2D-joint boxes of matched people (and over all GT people, unmatched = 0)."""

    higher_is_better = True
    _stats = BoxIoUStats

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sum_state("iou_sum", self.num_sequences)
        self._sum_state("people_all", self.num_sequences)
        self._sum_state("people_matched", self.num_sequences)

    def _batch_stats(self, people: PeopleBatch) -> tuple:
        return _box_iou_update(people, match=self.match, num_sequences=self.num_sequences)

    def compute(self) -> BoxIoUResult:
        """BoxIoUResult over everything accumulated."""
        return _box_iou_compute(self._state_stats())


class APRoot(Metric):
    """AP_root (RootNet): average precision of root localisation within ``threshold_mm`` (250 mm = 25 cm).

    ``update(roots)`` takes a ``RootsBatch`` (``ap_root``'s input), as the person metrics take a ``PeopleBatch``.
    States are per-prediction lists (``"cat"``) because AP needs the global confidence order.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, threshold_mm: float = AP_ROOT_THRESHOLD_MM, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold_mm = float(threshold_mm)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("true_positive", default=[], dist_reduce_fx="cat")
        self.add_state("num_gt", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, roots: RootsBatch) -> None:
        """Accumulate a batch of frames."""
        s = _ap_root_update(roots, threshold_mm=self.threshold_mm)
        self.scores.append(s.scores)
        self.true_positive.append(s.true_positive)
        self.num_gt += s.num_gt

    def compute(self) -> torch.Tensor:
        """() AP in [0, 1]."""
        return _ap_root_compute(APRootStats(_cat(self.scores), _cat(self.true_positive), self.num_gt))


def _cat(x: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A list state (before sync) or an already concatenated tensor (after a DDP sync) as one tensor.

    ``dim_zero_cat`` refuses an empty list (no update on this rank): that is no predictions, an empty tensor.
    """
    return torch.zeros(0, dtype=torch.float64) if isinstance(x, list) and not x else dim_zero_cat(x)
