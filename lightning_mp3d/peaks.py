"""The one peak finder: 3x3 non-maximum suppression on a batch of maps and the 3x3 sub-cell refinement.

Used by the PAF grouping (``grouping.find_peaks``, joint heatmaps) and by the student's root heatmap
(``roots.find_roots``). A peak is a cell >= its 8 neighbours and > the 4 that precede it in raster order (so a flat
plateau, e.g. a probability saturated to exactly 1.0, gives one peak: its first cell in raster order), above a
threshold; outside the grid counts as 0. Refinement: the centroid of the 3x3 neighbourhood weighted by the map
clamped at 0, as an offset in cells. Cells are indexed (col, row); cell (row i, col j) is centred at (j + 0.5, i + 0.5)
grid units. Pure tensor code: no Lightning import.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F


class PeakCells(NamedTuple):
    """The strongest peaks of each map, padded to K.

    Attributes:
        cells: (B, J, K, 2) long (col, row); (0, 0) where invalid.
        score: (B, J, K) map value at the peak (-1 where no peak was left, e.g. fewer than K peaks).
        valid: (B, J, K) bool, score above the threshold.
    """

    cells: torch.Tensor
    score: torch.Tensor
    valid: torch.Tensor


def peak_cells(maps: torch.Tensor, threshold: float, max_peaks: int) -> PeakCells:
    """Local maxima of each map above ``threshold``, strongest first.

    Args:
        maps: (B, J, H, W).
        threshold: minimum peak value (strictly above).
        max_peaks: the most peaks kept per map; K = min(max_peaks, H*W).
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, J, H, W), got {tuple(maps.shape)}")
    h, w = maps.shape[-2:]
    padded = F.pad(maps, (1, 1, 1, 1))
    shifted = [padded[..., dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]  # raster order
    before = functools.reduce(torch.maximum, shifted[:4])  # (B, J, H, W) up-left, up, up-right, left
    after = functools.reduce(torch.maximum, shifted[5:])
    is_peak = (maps >= after) & (maps > before) & (maps > threshold)
    k = min(max_peaks, h * w)
    values = torch.where(is_peak, maps, torch.full_like(maps, -1.0)).flatten(2)
    score, idx = values.topk(k, dim=2)  # (B, J, K)
    valid = score > threshold
    cells = torch.stack((idx % w, torch.div(idx, w, rounding_mode="floor")), -1)  # (B, J, K, 2) (col, row)
    return PeakCells(cells * valid[..., None], score, valid)


def subcell_offsets(maps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Offsets (dx, dy) in cells, each in (-1, 1), of the 3x3 centroid around each cell of ``maps.clamp_min(0)``.

    Args:
        maps: (B, J, H, W).
        cells: (B, J, K, 2) long (col, row).

    Returns:
        (B, J, K, 2) in ``maps.dtype``; (0, 0) where the neighbourhood is all 0.
    """
    b, j, _, w = maps.shape
    k = cells.shape[2]
    col, row = cells[..., 0], cells[..., 1]
    padded = F.pad(maps.clamp_min(0), (1, 1, 1, 1))
    offsets = torch.arange(-1, 2, device=maps.device)
    rr = (row[..., None, None] + 1 + offsets[:, None]).expand(*row.shape, 3, 3)  # (B, J, K, 3, 3)
    cc = (col[..., None, None] + 1 + offsets[None, :]).expand(*col.shape, 3, 3)
    patch = padded.flatten(2).gather(2, (rr * (w + 2) + cc).flatten(2)).view(b, j, k, 3, 3)
    total = patch.sum((-1, -2)).clamp_min(1e-12)
    off = offsets.to(maps.dtype)
    dx = (patch.sum(-2) * off).sum(-1) / total
    dy = (patch.sum(-1) * off).sum(-1) / total
    return torch.stack((dx, dy), -1)
