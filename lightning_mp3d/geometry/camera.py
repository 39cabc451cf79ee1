"""Pinhole camera with fixed intrinsics derived from the input size: T_G and T_K.

Convention
----------
- Full perspective (not weak perspective): ``u = f x / z + c_x``, ``v = f y / z + c_y``. T_G inverts it at the
  root, so ``project(translate(p_r, r, d))[root] == r`` exactly.
- Camera axes x right, y down, z forward; millimetres in 3D.
- Pixels are continuous coordinates: the image spans [0, W] x [0, H]; pixel (row i, col j) has its centre at
  (j + 0.5, i + 0.5). ``(u, v)`` = (x pixel, y pixel).
- Intrinsics: focal length ``f = focal_scale * W`` (default 1.0: a 53 degree horizontal field of view) and the
  principal point at the image centre.
- An output grid of G x G cells over a W-pixel image has cell (row i, col j) centred at
  ((j + 0.5) W / G, (i + 0.5) W / G).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

MIN_DEPTH_MM = 1.0


class Intrinsics(NamedTuple):
    """Pinhole intrinsics in pixels: ``u = fx x / z + cx``, ``v = fy y / z + cy``.

    The one camera type: the model's fixed input camera (``for_image``, fx == fy) and the real cameras of datasets
    (MuPoTS-3D, 3DPW, MuCo-3DHP, ``mp3d-predict --intrinsics``); as a batched tensor, (..., 4) (fx, fy, cx, cy).
    """

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def for_image(cls, image_size: int | tuple[int, int] = 224, focal_scale: float = 1.0) -> Intrinsics:
        """Fixed intrinsics of a square (or (H, W)) input image."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        return cls(fx=focal_scale * w, fy=focal_scale * w, cx=w / 2.0, cy=h / 2.0)

    @property
    def focal(self) -> float:
        """The focal length: ``fx`` for square pixels (fx == fy), else ``sqrt(fx fy)`` (the same apparent area)."""
        return self.fx if self.fx == self.fy else math.sqrt(self.fx * self.fy)

    def matrix(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """3x3 K."""
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=dtype)


def root_position(roots_px: torch.Tensor, depth: torch.Tensor, intrinsics: Intrinsics) -> torch.Tensor:
    """Camera-frame root position from its pixel location and depth.

    Args:
        roots_px: (..., 2) pixels (u, v).
        depth: (...) millimetres (z of the root).
        intrinsics: the camera of the image ``roots_px`` lie in.

    Returns:
        (..., 3) millimetres.
    """
    if roots_px.shape[-1:] != (2,) or roots_px.shape[:-1] != depth.shape:
        raise ValueError(
            f"roots_px must be (..., 2) and depth (...), got {tuple(roots_px.shape)} and {tuple(depth.shape)}"
        )
    x = (roots_px[..., 0] - intrinsics.cx) * depth / intrinsics.fx
    y = (roots_px[..., 1] - intrinsics.cy) * depth / intrinsics.fy
    return torch.stack((x, y, depth), -1)


def translate(p_r: torch.Tensor, roots_px: torch.Tensor, depth: torch.Tensor, intrinsics: Intrinsics) -> torch.Tensor:
    """T_G: root-relative pose -> camera-centred global pose.

    Args:
        p_r: (..., J, 3) root-relative pose, millimetres, camera axes.
        roots_px: (..., 2) root pixel location (u, v) in the input image.
        depth: (...) absolute root depth, millimetres.
        intrinsics: the camera of the input image.

    Returns:
        p_g (..., J, 3) millimetres.
    """
    return p_r + root_position(roots_px, depth, intrinsics).unsqueeze(-2)


def project(p_g: torch.Tensor, intrinsics: Intrinsics, min_depth: float = MIN_DEPTH_MM) -> torch.Tensor:
    """T_K: camera-frame points -> pixels, full perspective.

    Args:
        p_g: (..., 3) millimetres (any number of leading dims, e.g. (B, P, J, 3)).
        intrinsics: the camera projecting them.
        min_depth: depths are clamped to at least this many millimetres so points behind the camera stay finite.

    Returns:
        (..., 2) pixels (u, v).
    """
    if p_g.shape[-1] != 3:
        raise ValueError(f"points must be (..., 3), got {tuple(p_g.shape)}")
    z = p_g[..., 2:3].clamp(min=min_depth)
    if intrinsics.fx == intrinsics.fy:  # square pixels (the model's camera): one scalar, no extra tensor
        uv = intrinsics.fx * p_g[..., :2] / z
    else:
        uv = p_g[..., :2] * p_g.new_tensor([intrinsics.fx, intrinsics.fy]) / z
    return uv + uv.new_tensor([intrinsics.cx, intrinsics.cy])


def grid_to_pixel(cells: torch.Tensor, grid_size: int, image_size: int) -> torch.Tensor:
    """Centres of grid cells (..., 2) as (col, row) indices -> pixels (u, v)."""
    return (cells.to(torch.get_default_dtype() if not cells.is_floating_point() else cells.dtype) + 0.5) * (
        image_size / grid_size
    )


def pixel_to_grid(pixels: torch.Tensor, grid_size: int, image_size: int) -> torch.Tensor:
    """Pixels (..., 2) (u, v) -> integer (col, row) cell indices, clamped into the grid."""
    return torch.floor(pixels * (grid_size / image_size)).long().clamp(0, grid_size - 1)


def _check_real_camera_args(poses: torch.Tensor, letterbox: torch.Tensor, intrinsics: torch.Tensor) -> None:
    if poses.shape[-1] != 3 or letterbox.shape[-1] != 3 or intrinsics.shape[-1] != 4:
        raise ValueError(
            f"poses must be (..., P, J, 3), letterbox (..., 3), intrinsics (..., 4); "
            f"got {tuple(poses.shape)}, {tuple(letterbox.shape)}, {tuple(intrinsics.shape)}"
        )


def to_real_camera(
    poses: torch.Tensor, letterbox: torch.Tensor, intrinsics: torch.Tensor, virtual: Intrinsics, root: int = 0
) -> torch.Tensor:
    """Re-express poses from the model's virtual input camera in the real camera of the original image.

    The model sees the original image through a letterbox/crop ``input_px = s * original_px + o`` and predicts in a
    camera of focal ``virtual.focal`` px on that input. Per person, the exact rule is:

    1. root pixel in the input ``u_in = project(root, virtual)``; in the original image ``u = (u_in - o) / s``;
    2. depth: the person's apparent size in the original image is ``virtual.focal / s`` px per (mm / mm of depth), so
       the real camera sees the same size at ``Z_real = Z * s * f_real / virtual.focal`` with
       ``f_real = sqrt(fx * fy)`` (the focal that keeps the apparent area when ``fx != fy``);
    3. root in the real camera: ``((u - cx) Z_real / fx, (v - cy) Z_real / fy, Z_real)`` (back-projection through
       the real intrinsics at that depth);
    4. the root-relative pose is kept: ``joints_real = root_real + (joints - root)``.

    Args:
        poses: (..., P, J, 3) millimetres in the virtual camera.
        letterbox: (..., 3) ``(s, o_x, o_y)`` with ``input_px = s * original_px + o`` (``imageio.Letterbox``).
        intrinsics: (..., 4) ``(fx, fy, cx, cy)`` of the original image, pixels.
        virtual: the model's input camera (``Intrinsics.for_image(224)``, square pixels).
        root: root joint index.

    Returns:
        (..., P, J, 3) millimetres in the real camera.
    """
    _check_real_camera_args(poses, letterbox, intrinsics)
    root_v = poses[..., root, :]  # (..., P, 3)
    u_in = project(root_v, virtual)  # (..., P, 2)
    s, offset = letterbox[..., None, 0:1], letterbox[..., None, 1:3]  # (..., 1, 1), (..., 1, 2)
    u = (u_in - offset) / s
    fx, fy, cx, cy = (intrinsics[..., None, i] for i in range(4))  # each (..., 1)
    z = root_v[..., 2].clamp(min=MIN_DEPTH_MM) * s[..., 0] * torch.sqrt(fx * fy) / virtual.focal
    root_r = torch.stack(((u[..., 0] - cx) * z / fx, (u[..., 1] - cy) * z / fy, z), -1)  # (..., P, 3)
    return poses - root_v.unsqueeze(-2) + root_r.unsqueeze(-2)


def from_real_camera(
    poses: torch.Tensor, letterbox: torch.Tensor, intrinsics: torch.Tensor, virtual: Intrinsics, root: int = 0
) -> torch.Tensor:
    """Inverse of :func:`to_real_camera`: real-camera poses -> the model's input camera (e.g. training GT).

    The root's real pixel ``(fx X/Z + cx, fy Y/Z + cy)`` goes to the input (``s * u + o``) and is back-projected
    through ``virtual`` at depth ``Z * virtual.focal / (s * sqrt(fx * fy))``; the root-relative pose is kept.

    Args:
        poses: (..., P, J, 3) millimetres in the real camera.
        letterbox: (..., 3) ``(s, o_x, o_y)`` with ``input_px = s * original_px + o`` (``imageio.Letterbox``).
        intrinsics: (..., 4) ``(fx, fy, cx, cy)`` of the original image, pixels.
        virtual: the model's input camera.
        root: root joint index.

    Returns:
        (..., P, J, 3) millimetres in the virtual camera.
    """
    _check_real_camera_args(poses, letterbox, intrinsics)
    root_r = poses[..., root, :]  # (..., P, 3)
    fx, fy, cx, cy = (intrinsics[..., None, i] for i in range(4))  # each (..., 1)
    z_r = root_r[..., 2].clamp(min=MIN_DEPTH_MM)
    u = torch.stack((fx * root_r[..., 0] / z_r + cx, fy * root_r[..., 1] / z_r + cy), -1)  # (..., P, 2)
    s, offset = letterbox[..., None, 0:1], letterbox[..., None, 1:3]
    u_in = u * s + offset
    z = z_r * virtual.focal / (s[..., 0] * torch.sqrt(fx * fy))
    root_v = root_position(u_in, z, virtual)  # (..., P, 3)
    return poses - root_r.unsqueeze(-2) + root_v.unsqueeze(-2)
