"""What every person metric takes (``PeopleBatch``) and does first (check -> match -> GT order, ``matched_people``).

Inputs are batches of frames with padded people: predictions ``(B, P, 15, 3)`` millimetres (camera frame),
``(B, P, 15, 2)`` pixels and a ``(B, P)`` bool mask; ground truth ``(B, G, 15, 3)``, ``(B, G, 15, 2)``, ``(B, G)``.
``sequence`` is ``(B,)`` long in ``[0, num_sequences)`` (MuPoTS ``TS1`` is 0) or None (all 0). Joint order is ours
(``skeleton.JOINTS``), which is MuPoTS-3D's joints 0..14 (``skeleton.MUPOTS17_TO_OURS``).

Sums are accumulated per sequence in float64 so that sums over DDP ranks match one process to rounding; the
``ratio`` / ``mean_over_sequences`` / ``group_ratios`` helpers turn them into results (NaN where nothing was
measured: a missing measurement is not a perfect one).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.metrics.functional.matching import MatchSpec, gather_matched
from lightning_mp3d.skeleton import JOINT_GROUPS, NUM_JOINTS


class PeopleBatch(NamedTuple):
    """A batch of frames with padded predicted and GT people: the input of every person metric.

    The 3D fields may be None for the 2D metrics (``pck2d``, ``box_iou``), which ignore them.
    """

    pred_poses: torch.Tensor | None  # (B, P, 15, 3) millimetres, camera frame
    pred_2d: torch.Tensor  # (B, P, 15, 2) pixels
    pred_mask: torch.Tensor  # (B, P) bool: which predictions exist
    gt_poses: torch.Tensor | None  # (B, G, 15, 3) millimetres (annot3 or univ_annot3: the metric's gt_variant)
    gt_2d: torch.Tensor  # (B, G, 15, 2) pixels, same image frame as pred_2d
    gt_mask: torch.Tensor  # (B, G) bool: which GT people are valid
    sequence: torch.Tensor | None = None  # (B,) long sequence index, or None (all 0)

    def sequence_index(self, num_sequences: int, poses: bool = True) -> torch.Tensor:
        """Validate the shapes (the 3D ones only when ``poses``); return the (B,) long sequence index."""
        _, pred_2d, pred_mask, _, gt_2d, gt_mask, sequence = self
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
            raise ValueError(
                f"gt_mask must be a bool (B, G) = {(b, g)} tensor, got {gt_mask.dtype} {tuple(gt_mask.shape)}"
            )
        if poses:
            for name, x, n in (("pred_poses", self.pred_poses, p), ("gt_poses", self.gt_poses, g)):
                if x is None or x.shape != (b, n, NUM_JOINTS, 3):
                    got = None if x is None else tuple(x.shape)
                    shape = f"(B, {name[0].upper()}, {NUM_JOINTS}, 3) = {(b, n, NUM_JOINTS, 3)}"
                    raise ValueError(f"{name} must be {shape}, got {got}")
        if sequence is None:
            return torch.zeros(b, dtype=torch.long, device=pred_2d.device)
        if sequence.shape != (b,) or sequence.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"sequence must be an integer (B,) = ({b},) tensor, got {sequence.dtype} {tuple(sequence.shape)}"
            )
        if b and (int(sequence.min()) < 0 or int(sequence.max()) >= num_sequences):
            raise ValueError(f"sequence values must lie in [0, {num_sequences}), got {sequence.tolist()}")
        return sequence.long()


class MatchedPeople(NamedTuple):
    """A batch after matching, in GT order: the matched prediction of every GT person (zeros where unmatched)."""

    pred_poses: torch.Tensor | None  # (B, G, 15, 3), None for the 2D metrics
    pred_2d: torch.Tensor  # (B, G, 15, 2)
    gt_poses: torch.Tensor | None  # (B, G, 15, 3)
    gt_2d: torch.Tensor  # (B, G, 15, 2)
    valid: torch.Tensor  # (B, G) bool: valid GT people
    matched: torch.Tensor  # (B, G) bool: valid GT people with a matched prediction
    sequence: torch.Tensor  # (B,) long
    num_sequences: int

    def sum_by_sequence(self, values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Sum per-person ``values`` (B, G, ...) weighted by (B, G) ``valid`` or ``matched`` -> (S, ...) float64."""
        b, g = weight.shape
        w = weight.double().view(b, g, *([1] * (values.ndim - 2)))
        flat = (values.double() * w).reshape(b * g, *values.shape[2:])
        out = torch.zeros((self.num_sequences, *values.shape[2:]), dtype=torch.float64, device=values.device)
        return out.index_add_(0, self.sequence.repeat_interleave(g), flat)


def matched_people(people: PeopleBatch, match: MatchSpec, num_sequences: int, poses: bool = True) -> MatchedPeople:
    """Check ``people``, match them by ``match`` and put the matched predictions in GT order.

    Args:
        people: the batch.
        match: how predictions pair with GT people.
        num_sequences: size of the per-sequence sums (``sequence`` must lie in ``[0, num_sequences)``).
        poses: whether the metric reads the 3D poses (checked and gathered) or only the 2D joints (3D ignored).
    """
    seq = people.sequence_index(num_sequences, poses)
    m = match.match(people.pred_2d, people.pred_mask, people.gt_2d, people.gt_mask)
    return MatchedPeople(
        pred_poses=gather_matched(people.pred_poses, m) if poses else None,
        pred_2d=gather_matched(people.pred_2d, m),
        gt_poses=people.gt_poses if poses else None,
        gt_2d=people.gt_2d,
        valid=people.gt_mask,
        matched=people.gt_mask & m.matched,
        sequence=seq,
        num_sequences=num_sequences,
    )


def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """The quotient ``num / den``, NaN where ``den == 0``."""
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.full_like(num, float("nan")))


def mean_over_sequences(per_seq: torch.Tensor) -> torch.Tensor:
    """Mean over the sequences that have data (non-NaN); NaN when none has."""
    return per_seq.nanmean() if (~per_seq.isnan()).any() else per_seq.new_tensor(float("nan"))


def group_ratios(
    per_joint_num: torch.Tensor, per_joint_den: torch.Tensor, joints: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Per joint group ratio of summed numerators and denominators over the group's joints that are in ``joints``."""
    out = {}
    for name, members in JOINT_GROUPS.items():
        sel = [j for j in members if j in joints]
        if sel:
            out[name] = ratio(per_joint_num[..., sel].sum(-1), per_joint_den[..., sel].sum(-1))
    return out
