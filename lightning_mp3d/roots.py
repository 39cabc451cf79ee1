"""Root (pelvis) heatmap: Gaussian training targets on the output grid and its peaks for inference (``peaks``).

Pure tensor code. The output grid is G x G (14 x 14) cells over the 224-pixel input; cells are indexed (col, row)
like ``geometry.grid_to_pixel``. The root channel of s holds logits; ``sigmoid`` gives the pelvis probability.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_mp3d.geometry import grid_to_pixel
from lightning_mp3d.peaks import peak_cells, subcell_offsets


class RootDetections(NamedTuple):
    """Roots found on the heatmap, ``K = max_people`` slots per image, padded with mask False."""

    cells: torch.Tensor  # (B, K, 2) long (col, row)
    mask: torch.Tensor  # (B, K) bool
    confidence: torch.Tensor  # (B, K) sigmoid probability, 0 where masked
    roots_px: torch.Tensor  # (B, K, 2) pixels (u, v): cell centres, or sub-cell (``find_roots(subcell=True)``)


def root_heatmap_targets(
    root_cells: torch.Tensor, mask: torch.Tensor, grid_size: int = 14, sigma: float = 0.75
) -> torch.Tensor:
    """Gaussian targets peaking at exactly 1 on each root cell (max over people).

    Args:
        root_cells: (B, P, 2) long (col, row) cells.
        mask: (B, P) bool, which people exist.
        grid_size: G.
        sigma: Gaussian width in cells.

    Returns:
        (B, G, G) targets in [0, 1].
    """
    if root_cells.ndim != 3 or root_cells.shape[-1] != 2 or mask.shape != root_cells.shape[:2]:
        raise ValueError(
            f"root_cells must be (B, P, 2) and mask (B, P), got {tuple(root_cells.shape)}, {tuple(mask.shape)}"
        )
    ar = torch.arange(grid_size, device=root_cells.device, dtype=torch.float32)
    dx = ar.view(1, 1, 1, -1) - root_cells[..., 0, None, None].float()  # (B, P, 1, G)
    dy = ar.view(1, 1, -1, 1) - root_cells[..., 1, None, None].float()  # (B, P, G, 1)
    g = torch.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma)) * mask[..., None, None]  # (B, P, G, G)
    if g.shape[1] == 0:
        return g.new_zeros(g.shape[0], grid_size, grid_size)
    return g.amax(1)


def find_roots(
    logits: torch.Tensor, threshold: float = 0.3, max_people: int = 8, image_size: int = 224, subcell: bool = False
) -> RootDetections:
    """Peaks of the root heatmap (``peaks.peak_cells``, the grouping's NMS: one per flat plateau), top-k by score.

    Args:
        logits: (B, G, G) root logits (or (B, 1, G, G)).
        threshold: minimum sigmoid probability of a peak.
        max_people: K, slots per image.
        image_size: input image side in pixels, for the root pixels.
        subcell: root pixels refined below the cell by the 3x3 probability centroid (``peaks.subcell_offsets``, a
            peak between two cells lands between them); False: the cell centres.

    Returns:
        RootDetections sorted by descending confidence; masked slots hold cell (0, 0).
    """
    if logits.ndim == 4 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim != 3 or logits.shape[1] != logits.shape[2]:
        raise ValueError(f"logits must be (B, G, G), got {tuple(logits.shape)}")
    b, g, _ = logits.shape
    prob = torch.sigmoid(logits)[:, None]  # (B, 1, G, G)
    cells, conf, mask = (x[:, 0] for x in peak_cells(prob, threshold, max_people))  # (B, K, 2), (B, K), (B, K)
    if cells.shape[1] < max_people:
        pad = max_people - cells.shape[1]
        cells = torch.cat((cells, cells.new_zeros(b, pad, 2)), 1)
        conf = torch.cat((conf, conf.new_zeros(b, pad)), 1)
        mask = torch.cat((mask, mask.new_zeros(b, pad)), 1)
    conf = torch.where(mask, conf, torch.zeros_like(conf))
    if subcell:
        xy = cells.to(prob.dtype) + 0.5 + subcell_offsets(prob, cells[:, None])[:, 0]  # (B, K, 2) grid units
        roots_px = xy * (image_size / g)
    else:
        roots_px = grid_to_pixel(cells, g, image_size).to(logits.dtype)
    return RootDetections(cells, mask, conf, roots_px)


def unique_root_mask(cells: torch.Tensor, mask: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
    """Keep one person per occupied grid cell (the highest score; ties go to the lower index).

    Several people whose pelvis falls in the same cell share one vector of s, so only one can be supervised there
    (suppl. 5 a).

    Args:
        cells: (B, P, 2) long (col, row).
        mask: (B, P) bool.
        score: (B, P) e.g. the teacher's mean joint confidence; default: all equal.

    Returns:
        (B, P) bool mask, a subset of ``mask``.
    """
    if score is None:
        score = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    p = mask.shape[1]
    same = (cells[:, :, None, :] == cells[:, None, :, :]).all(-1) & mask[:, :, None] & mask[:, None, :]  # (B, P, P)
    idx = torch.arange(p, device=mask.device)
    beats = (score[:, None, :] > score[:, :, None]) | ((score[:, None, :] == score[:, :, None]) & (idx < idx[:, None]))
    # person i loses if some other valid j in the same cell beats it
    loses = (same & beats & (idx[None, :] != idx[:, None])).any(-1)
    return mask & ~loses
