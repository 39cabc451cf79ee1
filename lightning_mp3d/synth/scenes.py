"""D_syn scene composition (paper 3.2 b, Fig. 3B): canonical poses -> random rotation -> root in the frustum.

Convention
----------
- A scene holds up to ``max_people`` (P <= 4) people; tensors are padded to P rows, valid rows first, padded rows
  zero with ``mask`` False.
- Rotation: yaw, pitch, roll drawn uniformly from their ranges (radians, the Euler order of ``geometry/rigid.py``)
  and stored as the 6 sin/cos numbers ``c`` of ``geometry.rotate`` (T_R).
- Placement: each root's pixel ``(u, v)`` and depth ``d`` are drawn, then ``geometry.translate`` (T_G) puts it at
  ``root_position(roots_px, depth)``, so every root lies inside the camera frustum and projects exactly onto its
  pixel (full perspective, ``geometry/camera.py``). Pixels stay ``margin_px`` away from the image border.
- Distinct root cells: the cells of the ``grid_size x grid_size`` output grid are drawn *without replacement*
  (``torch.multinomial`` with weights = each cell's area inside the margin), then the pixel uniformly inside the
  chosen cell's allowed part. Roots of one scene therefore never share a cell by construction, nothing has to be
  resolved or dropped, and the root pixel is uniform over the allowed region conditioned on distinct cells. If
  fewer allowed cells than ``max_people`` exist (huge margins) a ValueError says so.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lightning_mp3d.geometry.camera import Intrinsics, project, translate
from lightning_mp3d.geometry.rigid import euler_to_sincos, rotate
from lightning_mp3d.skeleton import NUM_JOINTS
from lightning_mp3d.synth.poses import normalize_bone_lengths, sample_artificial_poses

MAX_PEOPLE = 4
_CELL_INSET_PX = 1e-3  # keeps sampled pixels strictly inside their cell despite float rounding


class Scenes(NamedTuple):
    """A batch of multi-person scenes (B scenes, P = max_people rows, J = 15 joints)."""

    poses: torch.Tensor  # (B, P, J, 3) camera-centric millimetres (p_g)
    canonical: torch.Tensor  # (B, P, J, 3) canonical millimetres (p_c), pelvis at the origin
    rotation: torch.Tensor  # (B, P, 6) sin/cos of (yaw, pitch, roll), T_R's c
    roots_px: torch.Tensor  # (B, P, 2) root pixel (u, v) in the image
    depth: torch.Tensor  # (B, P) root depth, millimetres
    joints_2d: torch.Tensor  # (B, P, J, 2) projected joints, pixels (u, v)
    root_cells: torch.Tensor  # (B, P, 2) long (col, row) of the root on the output grid
    mask: torch.Tensor  # (B, P) bool, True for real people


def _check_people(min_people: int, max_people: int) -> None:
    for name, value in (("min_people", min_people), ("max_people", max_people)):
        if not 1 <= value <= MAX_PEOPLE:
            raise ValueError(f"{name} must be in 1..{MAX_PEOPLE}, got {value}")
    if min_people > max_people:
        raise ValueError(f"min_people ({min_people}) must not exceed max_people ({max_people})")


def _uniform(shape, low: float, high: float, generator, dtype, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=dtype, device=device)


def _cell_extents(
    grid_size: int, image_size: int, margin_px: float, dtype, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed [lo, hi] pixel interval of each grid column (same for rows): (G,), (G,); hi < lo when empty."""
    cell = image_size / grid_size
    edges = torch.arange(grid_size + 1, dtype=torch.float64) * cell
    lo = edges[:-1].clamp(min=margin_px) + _CELL_INSET_PX
    hi = edges[1:].clamp(max=image_size - margin_px) - _CELL_INSET_PX
    return lo.to(dtype=dtype, device=device), hi.to(dtype=dtype, device=device)


def sample_root_pixels(
    num_scenes: int,
    max_people: int,
    *,
    generator: torch.Generator | None = None,
    image_size: int = 224,
    grid_size: int = 14,
    margin_px: float = 16.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Root pixels in pairwise distinct grid cells (see the module header).

    Returns:
        roots_px (B, P, 2) pixels (u, v) and root_cells (B, P, 2) long (col, row); all P rows are distinct per scene.
    """
    lo, hi = _cell_extents(grid_size, image_size, margin_px, dtype, "cpu")
    usable = int((hi > lo).sum()) ** 2  # checked on the host copy: no device synchronisation
    if usable < max_people:
        raise ValueError(
            f"margin_px={margin_px} leaves {usable} usable cells of the {grid_size}x{grid_size} grid, "
            f"fewer than max_people={max_people}"
        )
    lo, hi = lo.to(device), hi.to(device)
    width = (hi - lo).clamp(min=0)  # (G,)
    area = (width[None, :] * width[:, None]).flatten()  # (G*G,) index = row * G + col
    weights = area.expand(num_scenes, -1)
    flat = torch.multinomial(weights, max_people, replacement=False, generator=generator)  # (B, P)
    cells = torch.stack((flat % grid_size, flat // grid_size), -1)  # (B, P, 2) (col, row)
    u = torch.rand(num_scenes, max_people, 2, generator=generator, dtype=dtype, device=device)
    roots_px = lo[cells] + width[cells] * u
    return roots_px, cells


def compose_scenes(
    num_scenes: int,
    *,
    generator: torch.Generator | None = None,
    min_people: int = 1,
    max_people: int = 4,
    poses: torch.Tensor | None = None,
    pose_range_scale: float = 1.0,
    yaw_range: tuple[float, float] = (-math.pi, math.pi),
    pitch_range: tuple[float, float] = (-0.25, 0.25),
    roll_range: tuple[float, float] = (-0.15, 0.15),
    depth_range: tuple[float, float] = (3000.0, 8000.0),
    intrinsics: Intrinsics | None = None,
    image_size: int = 224,
    grid_size: int = 14,
    margin_px: float = 16.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Scenes:
    """Random multi-person scenes, fully batched (no loop over scenes or people).

    Args:
        num_scenes: B.
        generator: torch.Generator on ``device`` (None: the global RNG).
        min_people: fewest people per scene (the count is drawn uniformly in [min_people, max_people]), in 1..4.
        max_people: most people per scene, in 1..4.
        poses: optional (N, 15, 3) bank of poses in millimetres to draw from with replacement (e.g. MoCap); they are
            brought to canonical poses with the fixed bone lengths by ``synth.poses.normalize_bone_lengths`` (as
            the AAE's pose loader does), so Ψ and M can reconstruct them. None: ``sample_artificial_poses``.
        pose_range_scale: ``range_scale`` of the artificial sampler (ignored with a bank).
        yaw_range: radians, uniform.
        pitch_range: radians, uniform.
        roll_range: radians, uniform.
        depth_range: root depth in millimetres, uniform.
        intrinsics: camera; default ``Intrinsics.for_image(image_size)``.
        image_size: square image side in pixels.
        grid_size: side of the root grid whose cells must be distinct (14 = H's output).
        margin_px: root pixels keep this distance from the image border.
        dtype: of the scene tensors.
        device: of the scene tensors (and of ``generator``).

    Returns:
        Scenes with P = max_people rows per scene.
    """
    _check_people(min_people, max_people)
    if num_scenes < 0:
        raise ValueError(f"num_scenes must be >= 0, got {num_scenes}")
    if not 0 < depth_range[0] <= depth_range[1]:
        raise ValueError(f"depth_range must be 0 < near <= far millimetres, got {depth_range}")
    intrinsics = Intrinsics.for_image(image_size) if intrinsics is None else intrinsics
    b, p = num_scenes, max_people
    opts = dict(dtype=dtype, device=device)

    count = torch.randint(min_people, max_people + 1, (b, 1), generator=generator, device=device)
    mask = torch.arange(p, device=device) < count  # (B, P)

    if poses is not None:
        if poses.ndim != 3 or poses.shape[1:] != (NUM_JOINTS, 3) or poses.shape[0] == 0:
            raise ValueError(f"pose bank must be (N, {NUM_JOINTS}, 3) with N >= 1, got {tuple(poses.shape)}")
        index = torch.randint(0, poses.shape[0], (b * p,), generator=generator, device=device)
        canonical = normalize_bone_lengths(poses.to(**opts)[index])
    else:
        canonical = sample_artificial_poses(b * p, generator, range_scale=pose_range_scale, **opts)
    canonical = canonical.view(b, p, NUM_JOINTS, 3)  # (B, P, J, 3)

    euler = torch.stack(
        [_uniform((b, p), lo, hi, generator, dtype, device) for lo, hi in (yaw_range, pitch_range, roll_range)], -1
    )  # (B, P, 3)
    rotation = euler_to_sincos(euler)  # (B, P, 6)
    roots_px, root_cells = sample_root_pixels(
        b, p, generator=generator, image_size=image_size, grid_size=grid_size, margin_px=margin_px, **opts
    )
    depth = _uniform((b, p), depth_range[0], depth_range[1], generator, dtype, device)

    p_g = translate(rotate(canonical, rotation), roots_px, depth, intrinsics)  # (B, P, J, 3)
    joints_2d = project(p_g, intrinsics)  # (B, P, J, 2)

    keep = mask.to(dtype)
    return Scenes(
        poses=p_g * keep[..., None, None],
        canonical=canonical * keep[..., None, None],
        rotation=rotation * keep[..., None],
        roots_px=roots_px * keep[..., None],
        depth=depth * keep,
        joints_2d=joints_2d * keep[..., None, None],
        root_cells=root_cells * mask[..., None],
        mask=mask,
    )


def check_root_cells(root_cells: torch.Tensor, mask: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(B,) bool: True where the masked roots of a scene occupy pairwise distinct cells."""
    flat = root_cells[..., 1] * grid_size + root_cells[..., 0]  # (B, P)
    same = flat[:, :, None] == flat[:, None, :]
    both = mask[:, :, None] & mask[:, None, :]
    off_diag = ~torch.eye(flat.shape[1], dtype=torch.bool, device=flat.device)
    return ~(same & both & off_diag).any((-1, -2))
