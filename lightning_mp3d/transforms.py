"""Differentiable spatial transforms T_s of images and the matching maps of 2D keypoints (for L_ss, paper 3.3).

Convention
----------
- A transform is an affine map in normalised image coordinates, with ``align_corners=False``: pixel u in
  [0, W] maps to ``2 u / W - 1`` in [-1, 1], consistent with ``geometry.camera`` (pixel centres at j + 0.5).
- ``theta`` (B, 2, 3) is what ``torch.nn.functional.affine_grid`` takes: it maps a normalised location of the
  *output* image I' to the location it samples in the input I. Points of I therefore move to I' by the inverse
  map, ``transform_points``.
- A horizontal flip also swaps left and right joint labels (``skeleton.FLIP_PERM``): a mirrored person's right
  hand is drawn where its left hand was. ``transform_keypoints`` applies both, so the equivariance target is
  ``transform_keypoints(k(I)) == k(T_s(I))``.
- Kinds: "flip" (mirror about the vertical centre line), "crop" (random crop of side ``scale * W`` inside the
  image, resized to W: zoom in), "rotate" (in-plane rotation about the image centre by an angle in
  [-max_angle, max_angle]; positive = clockwise on screen, since y points down). Outside samples are zeros.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as nnf

from lightning_mp3d.skeleton import FLIP_PERM, NUM_JOINTS

KINDS = ("flip", "crop", "rotate")


class SpatialTransform(NamedTuple):
    """A batch of affine image transforms."""

    theta: torch.Tensor  # (B, 2, 3) output-normalised -> input-normalised
    flipped: torch.Tensor  # (B,) bool: left/right labels swap

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> SpatialTransform:
        """The same transforms with ``theta`` in ``dtype``, both tensors on ``device``."""
        return SpatialTransform(self.theta.to(dtype=dtype, device=device), self.flipped.to(device))


def _check(transform: SpatialTransform, batch: int | None = None) -> None:
    theta = transform.theta
    if theta.ndim != 3 or theta.shape[1:] != (2, 3) or transform.flipped.shape != theta.shape[:1]:
        raise ValueError(
            f"theta must be (B, 2, 3) and flipped (B,), got {tuple(theta.shape)}, {tuple(transform.flipped.shape)}"
        )
    if batch is not None and theta.shape[0] != batch:
        raise ValueError(f"transform batch {theta.shape[0]} does not match data batch {batch}")


def identity_transform(
    batch: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> SpatialTransform:
    """The identity for ``batch`` images."""
    theta = torch.zeros(batch, 2, 3, dtype=dtype, device=device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    return SpatialTransform(theta, torch.zeros(batch, dtype=torch.bool, device=device))


def flip_transform(
    batch: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> SpatialTransform:
    """Horizontal flip for ``batch`` images."""
    theta = identity_transform(batch, dtype, device).theta
    theta[:, 0, 0] = -1.0
    return SpatialTransform(theta, torch.ones(batch, dtype=torch.bool, device=device))


def rotation_transform(angle: torch.Tensor) -> SpatialTransform:
    """In-plane rotation by ``angle`` (B,) radians about the image centre (positive: clockwise on screen)."""
    c, s = torch.cos(angle), torch.sin(angle)
    # points rotate by +angle, so the sampling grid rotates by -angle
    row0 = torch.stack((c, s, torch.zeros_like(c)), -1)
    row1 = torch.stack((-s, c, torch.zeros_like(c)), -1)
    return SpatialTransform(torch.stack((row0, row1), 1), torch.zeros_like(angle, dtype=torch.bool))


def crop_transform(scale: torch.Tensor, centre: torch.Tensor) -> SpatialTransform:
    """Crop a square and resize it to the full image.

    The square has side ``scale`` (B,) (a fraction of the image side) and centre ``centre`` (B, 2) in normalised
    coordinates.
    """
    theta = torch.zeros(scale.shape[0], 2, 3, dtype=scale.dtype, device=scale.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = centre
    return SpatialTransform(theta, torch.zeros_like(scale, dtype=torch.bool))


def random_spatial_transform(
    batch: int,
    generator: torch.Generator | None = None,
    kinds: tuple[str, ...] = KINDS,
    crop_scale: tuple[float, float] = (0.7, 0.9),
    max_angle_deg: float = 30.0,
) -> SpatialTransform:
    """One transform per image, its kind drawn uniformly from ``kinds``, in float64 on the CPU.

    Drawn on the CPU in float64 whatever the images' device, so a seed gives the same transforms everywhere; move
    them with ``.to(images.dtype, images.device)``.

    Args:
        batch: B.
        generator: CPU generator for reproducibility.
        kinds: subset of ("flip", "crop", "rotate").
        crop_scale: range of the crop side as a fraction of the image side.
        max_angle_deg: rotation range in degrees.

    Returns:
        SpatialTransform, float64 on the CPU.
    """
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds}")
    kind = torch.randint(len(kinds), (batch,), generator=generator)
    u = torch.rand(batch, 4, generator=generator, dtype=torch.float64)
    scale = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * u[:, 0]
    centre = (1.0 - scale)[:, None] * (2.0 * u[:, 1:3] - 1.0)  # crop stays inside the image
    angle = math.radians(max_angle_deg) * (2.0 * u[:, 3] - 1.0)
    options = {
        "flip": flip_transform(batch, torch.float64),
        "crop": crop_transform(scale, centre),
        "rotate": rotation_transform(angle),
    }
    theta = torch.stack([options[k].theta for k in kinds], 0)[kind, torch.arange(batch)]  # (B, 2, 3)
    flipped = torch.stack([options[k].flipped for k in kinds], 0)[kind, torch.arange(batch)]
    return SpatialTransform(theta, flipped)


def warp_images(images: torch.Tensor, transform: SpatialTransform) -> torch.Tensor:
    """I' = T_s(I), bilinear and differentiable in the images (and theta).

    Args:
        images: (B, C, H, W).
        transform: the T_s of every image.

    Returns:
        (B, C, H, W); samples from outside I are zero.
    """
    _check(transform, images.shape[0])
    grid = nnf.affine_grid(transform.theta.to(images.dtype), list(images.shape), align_corners=False)
    return nnf.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _to_norm(px: torch.Tensor, image_size: int) -> torch.Tensor:
    return 2.0 * px / image_size - 1.0


def _to_px(norm: torch.Tensor, image_size: int) -> torch.Tensor:
    return (norm + 1.0) * image_size / 2.0


def transform_points(points: torch.Tensor, transform: SpatialTransform, image_size: int = 224) -> torch.Tensor:
    """Move pixel locations of I to where T_s puts them in I' (no label swap).

    Args:
        points: (B, ..., 2) pixels (u, v) in I.
        transform: the T_s of every image.
        image_size: square image side in pixels.

    Returns:
        (B, ..., 2) pixels in I'.
    """
    _check(transform, points.shape[0])
    theta = transform.theta.to(points.dtype)
    a, t = theta[:, :, :2], theta[:, :, 2]  # (B, 2, 2), (B, 2)
    a_inv = torch.linalg.inv(a)
    shape = points.shape
    x = _to_norm(points.reshape(shape[0], -1, 2), image_size) - t[:, None, :]  # (B, M, 2)
    y = x @ a_inv.mT
    return _to_px(y, image_size).reshape(shape)


def swap_left_right(keypoints: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Swap left/right joint labels of the images that were flipped.

    Args:
        keypoints: (B, N, 15, D).
        flipped: (B,) bool.
    """
    if keypoints.ndim != 4 or keypoints.shape[2] != NUM_JOINTS:
        raise ValueError(f"keypoints must be (B, N, {NUM_JOINTS}, D), got {tuple(keypoints.shape)}")
    swapped = keypoints[:, :, list(FLIP_PERM)]
    return torch.where(flipped[:, None, None, None], swapped, keypoints)


def transform_keypoints(keypoints: torch.Tensor, transform: SpatialTransform, image_size: int = 224) -> torch.Tensor:
    """T_s on 2D poses: (B, N, 15, 2) pixels of I -> the same people's keypoints as seen in I'."""
    return transform_points(swap_left_right(keypoints, transform.flipped), transform, image_size)


def inside_image(points: torch.Tensor, image_size: int = 224) -> torch.Tensor:
    """(..., 2) pixels -> (...) bool, inside [0, image_size)."""
    return ((points >= 0) & (points < image_size)).all(-1)
