"""Person crops of the two-stage refinement H' (paper 4.3, Fig. 6): crop-and-resize and the crop's virtual camera.

Pure tensor code (no Lightning). Conventions
--------------------------------------------
- A crop is a square of side ``side_px`` centred at ``centre_px`` in the W-pixel input image, resized to W pixels
  (bilinear, differentiable, zeros outside the image: ``transforms.crop_transform``, sampled as
  ``transforms.warp_images`` does).
- Pixel mapping, defined once here (``mapping``): ``crop_px = s * image_px + o`` with ``s = W / side_px`` and
  ``o = W / 2 - s * centre_px``; ``to_crop_pixels`` / ``to_image_pixels`` apply it and its inverse. It is the map
  ``transforms.transform_points`` applies for the crop's ``SpatialTransform``.
- Virtual camera: H' sees the crop as the model sees any input, through ``Intrinsics.for_image(W)``. Its output maps
  to the image's camera by ``geometry.camera.to_real_camera`` (the root pixel exactly through the mapping, the depth
  times ``s``, the root-relative pose kept) and the image's camera to the crop's by ``from_real_camera``, its exact
  inverse (``to_image_camera`` / ``to_crop_camera``).
- Crop rule (``person_crops``): centred at the person's root pixel, side ``W * crop_depth_mm / depth``, so every
  person appears as large as a person ``crop_depth_mm`` away appears to the single-shot model (a far person is
  zoomed in, a near one zoomed out); the side is clamped to [``MIN_SIDE_PX``, 2 W].
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as nnf

from lightning_mp3d.geometry import Intrinsics
from lightning_mp3d.geometry.camera import from_real_camera, to_real_camera
from lightning_mp3d.transforms import SpatialTransform, crop_transform

MIN_SIDE_PX = 16.0
# The refinement's crop depth, measured on the embedded default (root-relative MPJPE of the refined people on the 128
# target test images; phase 2, single-shot: tiny 320 mm, cpu 322 mm): 3 m gives tiny 349 / cpu 360 mm, 4 m cpu 330,
# 4.5 m tiny 322 / cpu 320, 5.5 m tiny 323 / cpu 333. At 3 m every person is zoomed to the size of the nearest people
# H saw, and the orientation error rises from 63-65 to 77-79 degrees.
DEFAULT_CROP_DEPTH_MM = 4500.0


class PersonCrops(NamedTuple):
    """N crops of people from a batch of B images."""

    image: torch.Tensor  # (N,) long, the image each crop comes from
    slot: torch.Tensor  # (N,) long, the person slot of that image
    centre_px: torch.Tensor  # (N, 2) pixels (u, v) in the input image
    side_px: torch.Tensor  # (N,) pixels
    image_size: int = 224

    @property
    def mapping(self) -> torch.Tensor:
        """(N, 3) ``(s, o_x, o_y)`` with ``crop_px = s * image_px + o``."""
        s = self.image_size / self.side_px
        return torch.cat((s[:, None], self.image_size / 2.0 - s[:, None] * self.centre_px), 1)

    @property
    def transform(self) -> SpatialTransform:
        """The crop as the affine image transform of ``transforms`` (output crop -> input image, normalised)."""
        return crop_transform(self.side_px / self.image_size, 2.0 * self.centre_px / self.image_size - 1.0)


def person_crops(
    roots_px: torch.Tensor,
    depth: torch.Tensor,
    mask: torch.Tensor,
    crop_depth_mm: float = DEFAULT_CROP_DEPTH_MM,
    image_size: int = 224,
) -> PersonCrops:
    """One crop per valid person (``mask``), in (image, slot) order.

    Args:
        roots_px: (B, K, 2) root pixels in the input image.
        depth: (B, K) root depths, mm (stage 1's, or the truth in training).
        mask: (B, K) bool.
        crop_depth_mm: the depth at which a person appears in the crop at its true size (see the module header).
        image_size: W, the side of the input images and of the crops, pixels.
    """
    if roots_px.shape[:-1] != depth.shape or mask.shape != depth.shape or roots_px.shape[-1] != 2:
        raise ValueError(
            f"roots_px must be (B, K, 2), depth and mask (B, K); got {tuple(roots_px.shape)}, {tuple(depth.shape)}, "
            f"{tuple(mask.shape)}"
        )
    image, slot = torch.nonzero(mask, as_tuple=True)
    side = image_size * crop_depth_mm / depth[image, slot].clamp_min(1.0)
    side = side.clamp(MIN_SIDE_PX, 2.0 * image_size)
    return PersonCrops(image, slot, roots_px[image, slot], side, image_size)


def crop_images(images: torch.Tensor, crops: PersonCrops) -> torch.Tensor:
    """(B, C, W, W) images -> (N, C, W, W) crops, as one batched ``grid_sample``.

    The same as ``transforms.warp_images`` with the crops' transform, but the sampling grid is built here
    (``affine_grid`` refuses N = 0, a batch where nobody was found).
    """
    size = crops.image_size
    theta = crops.transform.theta.to(images.dtype)  # (N, 2, 3)
    centres = (2.0 * torch.arange(size, dtype=images.dtype, device=images.device) + 1.0) / size - 1.0  # align_corners
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    base = torch.stack((xs, ys, torch.ones_like(xs)), -1)  # (W, W, 3) output (x, y, 1), normalised
    grid = torch.einsum("hwk,nck->nhwc", base, theta)  # (N, W, W, 2) where each output pixel samples
    return nnf.grid_sample(images[crops.image], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_crop_pixels(points: torch.Tensor, crops: PersonCrops) -> torch.Tensor:
    """(N, ..., 2) image pixels -> crop pixels."""
    m = crops.mapping.to(points.dtype)
    shape = (m.shape[0],) + (1,) * (points.ndim - 2) + (2,)
    return m[:, 0].view(shape[:-1] + (1,)) * points + m[:, 1:].view(shape)


def to_image_pixels(points: torch.Tensor, crops: PersonCrops) -> torch.Tensor:
    """(N, ..., 2) crop pixels -> image pixels (inverse of ``to_crop_pixels``)."""
    m = crops.mapping.to(points.dtype)
    shape = (m.shape[0],) + (1,) * (points.ndim - 2) + (2,)
    return (points - m[:, 1:].view(shape)) / m[:, 0].view(shape[:-1] + (1,))


def _intrinsics(crops: PersonCrops, like: torch.Tensor) -> tuple[torch.Tensor, Intrinsics]:
    camera = Intrinsics.for_image(crops.image_size)
    return like.new_tensor([[camera.focal, camera.focal, camera.cx, camera.cy]]), camera  # (1, 4): every crop


def to_image_camera(poses: torch.Tensor, crops: PersonCrops) -> torch.Tensor:
    """(N, P, J, 3) mm in each crop's virtual camera -> the input image's camera (``to_real_camera``)."""
    k, camera = _intrinsics(crops, poses)
    return to_real_camera(poses, crops.mapping.to(poses.dtype), k, camera)


def to_crop_camera(poses: torch.Tensor, crops: PersonCrops) -> torch.Tensor:
    """(N, P, J, 3) mm in the input image's camera -> each crop's virtual camera (exact inverse of the above)."""
    k, camera = _intrinsics(crops, poses)
    return from_real_camera(poses, crops.mapping.to(poses.dtype), k, camera)
