"""The embedded D_I renderer: multi-person scenes drawn into 224x224 RGB images in two domain styles.

Bodies are built from the camera-centric 3D skeleton: 14 limb capsules whose radius follows perspective
(``r_px = f R_mm / z``), a head sphere (face or hair, depending on whether the person faces the camera) and a
torso quad (two triangles over the shoulders and hips). A per-pixel z-buffer over every (person, part) orders the
surfaces, so nearer people occlude farther ones. Colours come from per-person clothing/skin/hair palettes with
optional stripes, Lambert shading from a per-image light, over a procedural textured background; a global
tint, vignette, Gaussian blur and sensor noise finish the image.

Convention
----------
- Images (B, 3, H, W) float RGB in [0, 1]; pixel (row i, col j) has its centre at (j + 0.5, i + 0.5) as in
  ``geometry/camera.py``. 3D in millimetres, camera axes x right / y down / z forward.
- ``visibility[b, p, j]`` is True when joint j of person p projects inside the image and no *other* person's
  surface at that pixel is nearer than the joint (self-occlusion does not count).
- Every random draw for a batch is made before rasterising, so the result does not depend on the chunk size
  used to bound memory (``max_elements``).

The renderer's parts: domain styles in ``synth.styles``, the random appearance draws in ``synth.draws``, the body
rasteriser in ``synth.raster``; this module composes them (background, bodies, lighting and optics). Batches with
their ground truth come from ``synth.batches``. Pure tensor code: no Lightning import.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lightning_mp3d.geometry.camera import Intrinsics
from lightning_mp3d.synth.draws import draw_appearance
from lightning_mp3d.synth.raster import rasterize_bodies
from lightning_mp3d.synth.styles import DomainStyle, get_style

__all__ = ["RenderedImages", "render_images"]


class RenderedImages(NamedTuple):
    """Rendered images and joint visibility.

    Attributes:
        images: (B, 3, H, W) float RGB in [0, 1].
        visibility: (B, P, 15) bool, joint inside the image and not covered by a nearer other person.
    """

    images: torch.Tensor
    visibility: torch.Tensor


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur: images (B, C, H, W), sigma (B,) pixels (0 = identity)."""
    b, c, h, w = images.shape
    radius = max(1, int(math.ceil(3.0 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.clamp(min=1e-3).view(b, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / s).square())
    kernel = kernel / kernel.sum(-1, keepdim=True)  # (B, K)
    kernel = kernel.repeat_interleave(c, 0)  # (B*C, K)
    x = images.reshape(1, b * c, h, w)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(x, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)


def _visibility(joints_2d, z_joints, owner, zbuf, mask, image_size) -> torch.Tensor:
    b, p = mask.shape
    u, v = joints_2d[..., 0], joints_2d[..., 1]
    inside = (u >= 0) & (u < image_size) & (v >= 0) & (v < image_size)
    col = u.floor().long().clamp(0, image_size - 1)
    row = v.floor().long().clamp(0, image_size - 1)
    lin = (row * image_size + col).view(b, -1)  # (B, P*15)
    who = torch.gather(owner.view(b, -1), 1, lin).view(b, p, -1)
    depth = torch.gather(zbuf.view(b, -1), 1, lin).view(b, p, -1)
    me = torch.arange(p, device=owner.device).view(1, p, 1)
    covered = (who >= 0) & (who != me) & (depth < z_joints)
    return inside & ~covered & mask.unsqueeze(-1)


def render_images(
    scenes,
    style: str | DomainStyle = "target",
    *,
    generator: torch.Generator | None = None,
    image_size: int = 224,
    intrinsics: Intrinsics | None = None,
    max_elements: int = 1 << 23,
) -> RenderedImages:
    """Render multi-person scenes into RGB images of a domain style.

    Args:
        scenes: a ``Scenes`` from ``compose_scenes`` (any object with ``poses (B, P, 15, 3)`` camera mm,
            ``joints_2d (B, P, 15, 2)`` pixels and ``mask (B, P)`` bool).
        style: "source", "target" or a DomainStyle.
        generator: torch.Generator for every random appearance draw (on the scenes' device or the CPU).
        image_size: output H = W in pixels; must match the image size the scenes were projected for.
        intrinsics: the scenes' camera; default ``Intrinsics.for_image(image_size)``.
        max_elements: bound on B_chunk x P x H x W per rasterisation pass (memory), a performance knob only.

    Returns:
        RenderedImages(images (B, 3, H, W) in [0, 1], visibility (B, P, 15) bool).
    """
    st = get_style(style)
    poses, joints_2d, mask = scenes.poses, scenes.joints_2d, scenes.mask
    if poses.ndim != 4 or poses.shape[-2:] != (15, 3):
        raise ValueError(f"scenes.poses must be (B, P, 15, 3), got {tuple(poses.shape)}")
    if joints_2d.shape != poses.shape[:-1] + (2,) or mask.shape != poses.shape[:2]:
        raise ValueError(
            f"scenes.joints_2d must be (B, P, 15, 2) and mask (B, P) matching poses {tuple(poses.shape)}, "
            f"got {tuple(joints_2d.shape)} and {tuple(mask.shape)}"
        )
    b, p = mask.shape
    device = poses.device
    dtype = poses.dtype if poses.is_floating_point() else torch.float32
    poses, joints_2d, mask = poses.to(dtype), joints_2d.to(dtype), mask.bool()
    h = w = image_size
    draws = draw_appearance(st, b, p, h, w, generator, device, dtype)

    chunk = max(1, max_elements // max(1, p * h * w))
    images, vis = [], []
    for s in range(0, b, chunk):
        sl = slice(s, s + chunk)
        raster = rasterize_bodies(
            poses[sl],
            joints_2d[sl],
            mask[sl],
            draws.colours[sl],
            image_size=image_size,
            intrinsics=intrinsics,
            scale=draws.scale[sl],
            stripes=draws.stripes[sl],
            stripe_freq=draws.stripe_freq[sl],
            hairline=draws.hairline[sl],
            light=draws.light[sl],
            ambient=draws.ambient[sl],
            diffuse=draws.diffuse[sl],
        )
        img = torch.where((raster.owner >= 0).unsqueeze(1), raster.rgb, draws.background[sl])
        images.append(img)
        vis.append(_visibility(joints_2d[sl], poses[sl][..., 2], raster.owner, raster.depth, mask[sl], image_size))
    img = images[0] if len(images) == 1 else torch.cat(images, 0)
    # lighting and optics for the whole batch
    yy = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h - 0.5
    xx = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w - 0.5
    r2 = (yy.view(-1, 1).square() + xx.view(1, -1).square()) * 2.0  # 1 at the corners
    img = img.mul_(draws.gain.view(b, 3, 1, 1)).mul_(1.0 - draws.vignette.view(b, 1, 1, 1) * r2)
    if float(draws.blur.max()) > 0.05:
        img = _gaussian_blur(img, draws.blur)
    img = img.add_(draws.noise).clamp_(0.0, 1.0)
    return RenderedImages(img, torch.cat(vis, 0))
