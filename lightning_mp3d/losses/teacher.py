"""Cao et al.'s (CVPR 2017) heatmap + PAF regression loss with intermediate supervision, for stage 0.

Pure tensor code: no Lightning import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from lightning_mp3d.skeleton import FLIP_PERM, LIMB_FLIP_PERM, NUM_JOINTS, NUM_LIMBS

# Channel permutations that mirror left and right: heatmaps by joint, PAFs by limb (x and y channels kept together).
_HEAT_MIRROR = list(FLIP_PERM)
_PAF_MIRROR = [2 * limb + xy for limb in LIMB_FLIP_PERM for xy in (0, 1)]


class TeacherLoss(NamedTuple):
    """Loss terms, each a scalar: total = heatmap + paf (summed over stages)."""

    total: torch.Tensor
    heatmap: torch.Tensor
    paf: torch.Tensor


def _squared_error(pred: torch.Tensor, target: torch.Tensor, perm: list[int], side_weight: float) -> torch.Tensor:
    """Sum of squared errors with the left/right-antisymmetric part of the error weighted by ``side_weight``.

    The error e splits orthogonally into (e + e[perm]) / 2, what both sides share, and (e - e[perm]) / 2, how the left
    and right channels differ; ``|e|^2`` is the sum of their squares, so ``side_weight = 1`` is the plain L2.
    """
    err = pred - target
    if side_weight == 1.0:
        return err.square().sum()
    mirrored = err[:, perm]
    return ((err + mirrored) / 2).square().sum() + side_weight * ((err - mirrored) / 2).square().sum()


def teacher_loss(
    heatmaps: Sequence[torch.Tensor], pafs: Sequence[torch.Tensor], targets: torch.Tensor, *, side_weight: float = 1.0
) -> TeacherLoss:
    """L2 loss of every stage's heatmaps and PAFs against the rendered targets (Cao et al. eq. 5-6, W = 1).

    Each stage contributes the per-image sum of squared errors over channels and cells, averaged over the batch.

    Args:
        heatmaps: per stage, (B, 15, G, G).
        pafs: per stage, (B, 28, G, G).
        targets: (B, 43, G, G) from ``synth.maps.render_maps``: 15 heatmaps then 14 x 2 PAF channels.
        side_weight: weight of the part of the error by which the left and right channels differ (1: Cao et al.'s
            L2; our addition). A small teacher settles early on maps that are the same for both sides (the mean of
            the two labels wherever it cannot yet tell them apart); a larger weight makes telling them apart pay.

    Returns:
        TeacherLoss(total, heatmap, paf).
    """
    if targets.ndim != 4 or targets.shape[1] != NUM_JOINTS + 2 * NUM_LIMBS:
        raise ValueError(f"targets must be (B, {NUM_JOINTS + 2 * NUM_LIMBS}, G, G), got {tuple(targets.shape)}")
    if len(heatmaps) != len(pafs) or not heatmaps:
        raise ValueError(f"need one heatmap and one PAF output per stage, got {len(heatmaps)} and {len(pafs)}")
    hm_t, paf_t = targets[:, :NUM_JOINTS], targets[:, NUM_JOINTS:]
    for h, p in zip(heatmaps, pafs):
        if h.shape != hm_t.shape or p.shape != paf_t.shape:
            raise ValueError(
                f"stage outputs must be {tuple(hm_t.shape)} and {tuple(paf_t.shape)}, got {tuple(h.shape)} and "
                f"{tuple(p.shape)}"
            )
    b = targets.shape[0]
    heatmap = sum(_squared_error(h, hm_t, _HEAT_MIRROR, side_weight) for h in heatmaps) / b
    paf = sum(_squared_error(p, paf_t, _PAF_MIRROR, side_weight) for p in pafs) / b
    return TeacherLoss(heatmap + paf, heatmap, paf)
