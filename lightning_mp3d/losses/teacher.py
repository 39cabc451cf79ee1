"""Cao et al.'s (CVPR 2017) heatmap + PAF regression loss with intermediate supervision, for stage 0.

Pure tensor code: no Lightning import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from lightning_mp3d.skeleton import NUM_JOINTS, NUM_LIMBS


class TeacherLoss(NamedTuple):
    """Loss terms, each a scalar: total = heatmap + paf (summed over stages)."""

    total: torch.Tensor
    heatmap: torch.Tensor
    paf: torch.Tensor


def teacher_loss(heatmaps: Sequence[torch.Tensor], pafs: Sequence[torch.Tensor], targets: torch.Tensor) -> TeacherLoss:
    """L2 loss of every stage's heatmaps and PAFs against the rendered targets (Cao et al. eq. 5-6, W = 1).

    Each stage contributes the per-image sum of squared errors over channels and cells, averaged over the batch.

    Args:
        heatmaps: per stage, (B, 15, G, G).
        pafs: per stage, (B, 28, G, G).
        targets: (B, 43, G, G) from ``synth.maps.render_maps``: 15 heatmaps then 14 x 2 PAF channels.

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
    heatmap = sum(((h - hm_t) ** 2).sum() for h in heatmaps) / b
    paf = sum(((p - paf_t) ** 2).sum() for p in pafs) / b
    return TeacherLoss(heatmap + paf, heatmap, paf)
