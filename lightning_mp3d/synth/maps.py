"""m_syn: joint heatmaps and part affinity fields (Cao et al., CVPR 2017) rendered on the output grid.

Convention
----------
- Output (B, 43, G, G): channels 0..14 are the joint heatmaps in ``skeleton.JOINTS`` order; channels 15 + 2k and
  16 + 2k are the x (u, right) and y (v, down) components of the PAF of limb k = ``skeleton.LIMBS[k]`` (parent ->
  child direction).
- Maps are evaluated at grid-cell centres, ``geometry.grid_to_pixel``: cell (row i, col j) of a G-grid over a
  W-pixel image sits at ((j + 0.5) W / G, (i + 0.5) W / G) pixels; row i is the map's first spatial axis.
- Heatmap: ``exp(-|x - x_j|^2 / (2 sigma^2))`` per person, maximum over people (Cao et al. eq. 7).
- PAF: a cell is on limb (a -> b) of a person when ``0 <= (x - x_a) . v <= |x_b - x_a|`` and
  ``|(x - x_a) x v| <= paf_width_px`` (sigma_l of Cao et al. eq. 8: the distance from the limb axis, i.e. half of
  the band's width), with ``v`` the limb's unit vector; the field is ``v`` there, averaged over the people whose
  limb covers the cell (eq. 9), and zero elsewhere. Limbs shorter than 1e-6 px in the image, masked people and
  (with ``visibility``) limbs with an invisible end contribute nothing.
"""

from __future__ import annotations

import torch

from lightning_mp3d.geometry.camera import grid_to_pixel
from lightning_mp3d.skeleton import FLIP_PERM, LIMB_FLIP_PERM, LIMBS, NUM_JOINTS, NUM_LIMBS

MAP_CHANNELS = NUM_JOINTS + 2 * NUM_LIMBS  # 43
_PARENT_IDX = [a for a, _ in LIMBS]
_CHILD_IDX = [b for _, b in LIMBS]


def cell_centres(
    grid_size: int, image_size: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Pixel (u, v) of every grid cell centre: (G, G, 2) indexed [row, col]."""
    idx = torch.arange(grid_size, device=device)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    return grid_to_pixel(torch.stack((cols, rows), -1).to(dtype), grid_size, image_size)


def render_maps(
    joints_2d: torch.Tensor,
    mask: torch.Tensor,
    *,
    visibility: torch.Tensor | None = None,
    image_size: int = 224,
    grid_size: int = 28,
    sigma_px: float = 7.0,
    paf_width_px: float = 8.0,
) -> torch.Tensor:
    """Render m_syn for a batch of scenes.

    Args:
        joints_2d: (B, P, 15, 2) joint pixels (u, v) in the ``image_size`` image.
        mask: (B, P) bool, True for real people.
        visibility: optional (B, P, 15) bool; invisible joints get no peak and their limbs no field.
        image_size: image side, pixels.
        grid_size: G, side of the output grid.
        sigma_px: heatmap Gaussian standard deviation, pixels.
        paf_width_px: PAF half-width (distance from the limb axis), pixels.

    Returns:
        (B, 43, G, G) maps: heatmaps in [0, 1], PAF components in [-1, 1].
    """
    if joints_2d.ndim != 4 or joints_2d.shape[-2:] != (NUM_JOINTS, 2):
        raise ValueError(f"joints_2d must be (B, P, {NUM_JOINTS}, 2), got {tuple(joints_2d.shape)}")
    if mask.shape != joints_2d.shape[:2]:
        raise ValueError(f"mask must be (B, P) = {tuple(joints_2d.shape[:2])}, got {tuple(mask.shape)}")
    valid = mask.bool()[..., None].expand(joints_2d.shape[:3])  # (B, P, J)
    if visibility is not None:
        if visibility.shape != joints_2d.shape[:3]:
            raise ValueError(
                f"visibility must be (B, P, J) = {tuple(joints_2d.shape[:3])}, got {tuple(visibility.shape)}"
            )
        valid = valid & visibility.bool()
    b, _, _, _ = joints_2d.shape
    centres = cell_centres(grid_size, image_size, dtype=joints_2d.dtype, device=joints_2d.device).view(-1, 2)  # (C, 2)

    # Heatmaps: (B, P, J, C) Gaussians, invalid joints at zero, max over people.
    d2 = ((centres - joints_2d[..., None, :]) ** 2).sum(-1)  # (B, P, J, C)
    heat = torch.exp(-d2 / (2.0 * sigma_px**2)) * valid[..., None]
    heat = heat.amax(1) if heat.shape[1] > 0 else heat.new_zeros(b, NUM_JOINTS, centres.shape[0])

    # PAFs: limb a -> b per person.
    start, end = joints_2d[:, :, _PARENT_IDX], joints_2d[:, :, _CHILD_IDX]  # (B, P, L, 2)
    limb_valid = valid[:, :, _PARENT_IDX] & valid[:, :, _CHILD_IDX]  # (B, P, L)
    vec = end - start
    length = vec.norm(dim=-1)  # (B, P, L)
    unit = vec / length.clamp(min=1e-6)[..., None]
    rel = centres - start[..., None, :]  # (B, P, L, C, 2)
    along = (rel * unit[..., None, :]).sum(-1)  # (B, P, L, C)
    across = (rel[..., 0] * unit[..., None, 1] - rel[..., 1] * unit[..., None, 0]).abs()
    on = (along >= 0) & (along <= length[..., None]) & (across <= paf_width_px)
    on = on & (limb_valid & (length > 1e-6))[..., None]  # (B, P, L, C)
    weight = on.to(joints_2d.dtype)
    total = (weight[..., None] * unit[..., None, :]).sum(1)  # (B, L, C, 2)
    count = weight.sum(1).clamp(min=1.0)  # (B, L, C)
    paf = (total / count[..., None]).permute(0, 1, 3, 2).reshape(b, 2 * NUM_LIMBS, -1)  # (B, 2L, C): x, y per limb

    maps = torch.cat((heat, paf), 1)  # (B, 43, C)
    return maps.view(b, MAP_CHANNELS, grid_size, grid_size)


def flip_maps(maps: torch.Tensor) -> torch.Tensor:
    """Maps of the horizontally flipped image: mirror the columns, swap left/right channels, negate PAF x.

    Args:
        maps: (..., 43, G, G).

    Returns:
        (..., 43, G, G), equal to ``render_maps`` of the flipped joints (u -> W - u, labels swapped).
    """
    if maps.ndim < 3 or maps.shape[-3] != MAP_CHANNELS:
        raise ValueError(f"maps must be (..., {MAP_CHANNELS}, G, G), got {tuple(maps.shape)}")
    mirrored = maps.flip(-1)
    heat = mirrored[..., list(FLIP_PERM), :, :]
    paf = mirrored[..., NUM_JOINTS:, :, :].unflatten(-3, (NUM_LIMBS, 2))[..., list(LIMB_FLIP_PERM), :, :, :]
    paf = paf * paf.new_tensor([-1.0, 1.0])[:, None, None]
    return torch.cat((heat, paf.flatten(-4, -3)), -3)
