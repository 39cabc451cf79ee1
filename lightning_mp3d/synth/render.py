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

Pure tensor code: no Lightning import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from lightning_mp3d.geometry.camera import Intrinsics

__all__ = [
    "DOMAIN_STYLES",
    "BodyRaster",
    "DomainStyle",
    "RenderedImages",
    "get_style",
    "rasterize_bodies",
    "render_images",
    "synthetic_batch",
]

# Body parts drawn as capsules: (joint a, joint b, t0, t1, radius mm, colour slot). The segment runs from
# a + t0 (b - a) to a + t1 (b - a). Colour slots: 0 shirt, 1 pants, 2 skin, 3 forearm (skin or sleeve).
_CAPSULES: tuple[tuple[int, int, float, float, float, int], ...] = (
    (0, 1, 0.0, 1.0, 95.0, 0),  # spine
    (1, 2, 0.0, 0.45, 48.0, 2),  # neck (up to the head sphere)
    (1, 3, 0.0, 1.0, 62.0, 0),  # r clavicle
    (1, 4, 0.0, 1.0, 62.0, 0),  # l clavicle
    (3, 5, 0.0, 1.0, 50.0, 0),  # r upper arm
    (4, 6, 0.0, 1.0, 50.0, 0),  # l upper arm
    (5, 7, 0.0, 1.0, 40.0, 3),  # r forearm
    (6, 8, 0.0, 1.0, 40.0, 3),  # l forearm
    (0, 9, 0.0, 1.0, 85.0, 1),  # r pelvis
    (0, 10, 0.0, 1.0, 85.0, 1),  # l pelvis
    (9, 11, 0.0, 1.0, 75.0, 1),  # r thigh
    (10, 12, 0.0, 1.0, 75.0, 1),  # l thigh
    (11, 13, 0.0, 1.0, 55.0, 1),  # r shank
    (12, 14, 0.0, 1.0, 55.0, 1),  # l shank
)
_TORSO_TRIANGLES = ((3, 4, 10), (3, 10, 9))  # r_shoulder, l_shoulder, l_hip, r_hip
_TORSO_FRONT_MM = 60.0  # the torso surface sits this far in front of the joint plane
_HEAD_CENTRE = 0.62  # head sphere centre along neck -> head top
_HEAD_RADIUS_MM = 105.0
_NUM_SLOTS = 6  # shirt, pants, skin, forearm, hair, stripe colour
_CLUTTER = 6  # background clutter shapes per image (target style)


@dataclass(frozen=True)
class DomainStyle:
    """Appearance and pose distribution of one image domain.

    Ranges are (low, high) of a uniform draw per image (lighting, blur, noise) or per person (colours, thickness).

    Attributes:
        name: style name.
        scene_kwargs: keyword arguments for ``compose_scenes`` (the pose/camera distribution).
        limb_scale: multiplier of all body radii, per person.
        saturation: clothing saturation; value: clothing brightness (HSV).
        hue_centres: clothing hues are drawn around these (0..1) with ``hue_spread``; empty = any hue.
        skin_value: skin brightness range (hue fixed to skin tones).
        stripe_prob: probability that a person's shirt and pants carry stripes.
        short_sleeve_prob: probability that forearms are skin coloured.
        bg_noise: amplitude of the multi-octave value-noise texture on the background.
        bg_floor: amplitude of the perspective checker floor (0 = none).
        bg_stripes: amplitude of wall stripes (0 = none).
        bg_clutter_prob: probability of each of the clutter shapes in the background.
        bg_saturation: saturation of the background base colours.
        ambient: ambient light range; diffuse: directional light range.
        tint: colour-temperature tint amplitude.
        vignette: vignette strength range.
        blur_sigma: Gaussian blur sigma range, pixels.
        noise_std: additive Gaussian sensor noise range.
    """

    name: str
    scene_kwargs: dict[str, Any] = field(default_factory=dict)
    limb_scale: tuple[float, float] = (1.0, 1.0)
    saturation: tuple[float, float] = (0.5, 0.9)
    value: tuple[float, float] = (0.5, 0.9)
    hue_centres: tuple[float, ...] = ()
    hue_spread: float = 0.05
    skin_value: tuple[float, float] = (0.5, 0.9)
    stripe_prob: float = 0.0
    short_sleeve_prob: float = 0.5
    bg_noise: float = 0.05
    bg_floor: float = 0.0
    bg_stripes: float = 0.0
    bg_clutter_prob: float = 0.0
    bg_saturation: tuple[float, float] = (0.0, 0.2)
    ambient: tuple[float, float] = (0.5, 0.6)
    diffuse: tuple[float, float] = (0.4, 0.5)
    tint: float = 0.0
    vignette: tuple[float, float] = (0.0, 0.0)
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    noise_std: tuple[float, float] = (0.0, 0.0)


DOMAIN_STYLES: dict[str, DomainStyle] = {
    # The teacher's training domain, COCO-like: labelled 2D from many places. People in any orientation but with
    # the domain's own pose bias (80 % of the joint angle ranges, milder pitch/roll, nearer the camera), saturated
    # clothes, rooms with floors, wall stripes and clutter, varied light and optics. A studio-only source (plain
    # backdrops, yaw within +-90 deg) gave a teacher whose target-domain detections were 19 % precise (48 % recall):
    # every edge of the target's rooms fired. Trained on this domain the same tiny teacher reaches 96 % / 88 %
    # on target renders (README, "Differences from the paper").
    "source": DomainStyle(
        name="source",
        scene_kwargs={
            "pose_range_scale": 0.8,
            "yaw_range": (-math.pi, math.pi),
            "pitch_range": (-0.2, 0.2),
            "roll_range": (-0.12, 0.12),
            "depth_range": (3000.0, 6500.0),
        },
        limb_scale=(0.85, 1.2),
        saturation=(0.35, 1.0),
        value=(0.4, 1.0),
        hue_centres=(),
        skin_value=(0.35, 0.95),
        stripe_prob=0.3,
        short_sleeve_prob=0.4,
        bg_noise=0.1,
        bg_floor=0.15,
        bg_stripes=0.06,
        bg_clutter_prob=0.3,
        bg_saturation=(0.0, 0.4),
        ambient=(0.4, 0.7),
        diffuse=(0.3, 0.6),
        tint=0.06,
        vignette=(0.0, 0.2),
        blur_sigma=(0.3, 0.9),
        noise_std=(0.0, 0.025),
    ),
    # The deployment domain: any orientation, full joint ranges, people up to 7.5 m away, muted and more often
    # striped clothes, busier textured rooms (perspective floor, striped walls, clutter), more coloured uneven
    # light, stronger vignetting, defocus and sensor noise.
    "target": DomainStyle(
        name="target",
        scene_kwargs={
            "pose_range_scale": 1.0,
            "yaw_range": (-math.pi, math.pi),
            "pitch_range": (-0.25, 0.25),
            "roll_range": (-0.15, 0.15),
            "depth_range": (3000.0, 7500.0),
        },
        limb_scale=(0.8, 1.05),
        saturation=(0.15, 0.6),
        value=(0.3, 0.9),
        hue_centres=(),
        skin_value=(0.35, 0.9),
        stripe_prob=0.5,
        short_sleeve_prob=0.6,
        bg_noise=0.12,
        bg_floor=0.2,
        bg_stripes=0.08,
        bg_clutter_prob=0.35,
        bg_saturation=(0.1, 0.5),
        ambient=(0.35, 0.6),
        diffuse=(0.3, 0.7),
        tint=0.12,
        vignette=(0.1, 0.35),
        blur_sigma=(0.5, 1.1),
        noise_std=(0.01, 0.035),
    ),
}


class RenderedImages(NamedTuple):
    """Rendered images and joint visibility.

    Attributes:
        images: (B, 3, H, W) float RGB in [0, 1].
        visibility: (B, P, 15) bool, joint inside the image and not covered by a nearer other person.
    """

    images: torch.Tensor
    visibility: torch.Tensor


class BodyRaster(NamedTuple):
    """Shaded bodies before background, lighting and optics.

    Attributes:
        rgb: (B, 3, H, W) shaded body colour (undefined where ``owner == -1``).
        owner: (B, H, W) long, index of the person seen at each pixel, -1 for background.
        depth: (B, H, W) millimetres, z of the visible surface (+inf for background).
    """

    rgb: torch.Tensor
    owner: torch.Tensor
    depth: torch.Tensor


def get_style(style: str | DomainStyle) -> DomainStyle:
    """Resolve a style name to its DomainStyle (a DomainStyle passes through)."""
    if isinstance(style, DomainStyle):
        return style
    if style not in DOMAIN_STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {sorted(DOMAIN_STYLES)} or a DomainStyle")
    return DOMAIN_STYLES[style]


# ----------------------------------------------------------------------------------------------------------------
# random draws


def _uniform(shape: tuple[int, ...], lo_hi: tuple[float, float], generator, device, dtype) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u


def _normal(shape: tuple[int, ...], generator, device, dtype) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] (...) each -> RGB (..., 3)."""
    k = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device)
    kk = (k + h.unsqueeze(-1) * 6.0) % 6.0
    return v.unsqueeze(-1) - (v * s).unsqueeze(-1) * torch.clamp(torch.minimum(kk, 4.0 - kk), 0.0, 1.0)


class _Draws(NamedTuple):
    colours: torch.Tensor  # (B, P, SLOTS, 3)
    stripes: torch.Tensor  # (B, P) stripe amplitude (0 = plain)
    stripe_freq: torch.Tensor  # (B, P) stripes per limb length
    scale: torch.Tensor  # (B, P) radius multiplier
    hairline: torch.Tensor  # (B, P) in [-0.1, 0.5]
    light: torch.Tensor  # (B, 3) unit vector towards the light, camera axes
    ambient: torch.Tensor  # (B,)
    diffuse: torch.Tensor  # (B,)
    background: torch.Tensor  # (B, 3, H, W)
    gain: torch.Tensor  # (B, 3) global tint * brightness
    vignette: torch.Tensor  # (B,)
    blur: torch.Tensor  # (B,)
    noise: torch.Tensor  # (B, 3, H, W) already scaled


def _draw_colours(style: DomainStyle, b: int, p: int, generator, device, dtype) -> torch.Tensor:
    shape = (b, p, 3)  # shirt, pants, stripe colour
    if style.hue_centres:
        centres = torch.tensor(style.hue_centres, dtype=dtype, device=device)
        pick = (_uniform(shape, (0.0, 1.0), generator, device, dtype) * len(style.hue_centres)).long()
        pick = pick.clamp(max=len(style.hue_centres) - 1)
        hue = centres[pick] + style.hue_spread * _uniform(shape, (-1.0, 1.0), generator, device, dtype)
    else:
        hue = _uniform(shape, (0.0, 1.0), generator, device, dtype)
    sat = _uniform(shape, style.saturation, generator, device, dtype)
    val = _uniform(shape, style.value, generator, device, dtype)
    cloth = _hsv_to_rgb(hue % 1.0, sat, val)  # (B, P, 3, 3)
    skin_h = _uniform((b, p), (0.03, 0.09), generator, device, dtype)
    skin_s = _uniform((b, p), (0.3, 0.6), generator, device, dtype)
    skin_v = _uniform((b, p), style.skin_value, generator, device, dtype)
    skin = _hsv_to_rgb(skin_h, skin_s, skin_v)  # (B, P, 3)
    hair_v = _uniform((b, p), (0.05, 0.45), generator, device, dtype)
    hair = _hsv_to_rgb(skin_h, _uniform((b, p), (0.3, 0.7), generator, device, dtype), hair_v)
    short = _uniform((b, p), (0.0, 1.0), generator, device, dtype) < style.short_sleeve_prob
    forearm = torch.where(short.unsqueeze(-1), skin, cloth[:, :, 0])
    return torch.stack((cloth[:, :, 0], cloth[:, :, 1], skin, forearm, hair, cloth[:, :, 2]), dim=2)


def _value_noise(b: int, size: tuple[int, int], cells: int, generator, device, dtype) -> torch.Tensor:
    """Smooth noise (B, 1, H, W) in [-1, 1] from a cells x cells random lattice, bicubic upsampled."""
    lattice = _uniform((b, 1, cells, cells), (-1.0, 1.0), generator, device, dtype)
    # bicubic upsampling is separable and linear: rows (H, cells) @ lattice @ cols (cells, W), the same values as
    # F.interpolate(lattice, size, mode="bicubic") up to float rounding, as two small matmuls
    rows = _bicubic_matrix(cells, size[0], device, dtype)
    cols = _bicubic_matrix(cells, size[1], device, dtype)
    return (rows @ lattice @ cols.T).clamp_(-1.0, 1.0)


def _bicubic_matrix(n: int, out: int, device, dtype) -> torch.Tensor:
    """(out, n) weights of F.interpolate's bicubic (align_corners=False) resampling of n samples to out."""
    eye = torch.eye(n, device=device, dtype=dtype).view(1, 1, n, n)
    return F.interpolate(eye, size=(out, n), mode="bicubic", align_corners=False)[0, 0]


def _draw_background(style: DomainStyle, b: int, h: int, w: int, generator, device, dtype) -> torch.Tensor:
    """Procedural textured backgrounds (B, 3, H, W) in [0, 1]."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h  # (H,)
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w  # (W,)
    yy, xx = ys.view(1, h, 1), xs.view(1, 1, w)
    hue = _uniform((b, 2), (0.0, 1.0), generator, device, dtype)
    sat = _uniform((b, 2), style.bg_saturation, generator, device, dtype)
    val = _uniform((b, 2), (0.3, 0.85), generator, device, dtype)
    top, bottom = _hsv_to_rgb(hue, sat, val).unbind(1)  # (B, 3) each
    bg = top.view(b, 3, 1, 1) + (bottom - top).view(b, 3, 1, 1) * yy.unsqueeze(1)  # (B, 3, H, 1)
    bg = bg.expand(b, 3, h, w)
    texture = _value_noise(b, (h, w), 6, generator, device, dtype).mul_(0.5)
    texture.add_(_value_noise(b, (h, w), 14, generator, device, dtype), alpha=0.3)
    texture.add_(_value_noise(b, (h, w), 40, generator, device, dtype), alpha=0.2)
    # value-noise texture, perspective checker floor below a random horizon and wall stripes above it are all
    # grey-level offsets: sum them into one (B, 1, H, W) field and add it once
    offset = texture.mul_(style.bg_noise)
    horizon = _uniform((b, 1, 1), (0.35, 0.65), generator, device, dtype)
    tile = _uniform((b, 1, 1), (0.3, 0.8), generator, device, dtype)
    if style.bg_floor != 0.0:
        below = (yy - horizon).clamp(min=1e-3)
        floor_z = 0.15 / below  # distance along the floor
        floor_x = (xx - 0.5) * floor_z
        checker = ((torch.floor(floor_x / tile) + torch.floor(floor_z / tile)) % 2.0) * 2.0 - 1.0  # (B, H, W)
        fade = (yy > horizon).to(dtype) * (1.0 - torch.exp(-below * 8.0))
        offset = offset + style.bg_floor * (checker * fade).unsqueeze(1)
    angle = _uniform((b, 1, 1), (0.0, math.pi), generator, device, dtype)
    period = _uniform((b, 1, 1), (0.03, 0.12), generator, device, dtype)
    phase = _uniform((b, 1, 1), (0.0, 2 * math.pi), generator, device, dtype)
    if style.bg_stripes != 0.0:
        wave = torch.sin(2 * math.pi * (xx * angle.cos() + yy * angle.sin()) / period + phase)
        offset = offset + style.bg_stripes * (wave * (yy <= horizon).to(dtype)).unsqueeze(1)
    bg = bg + offset  # (B, 3, H, W)
    # clutter: axis-aligned ellipses and boxes of random colours, evaluated inside their bounding boxes only
    k = _CLUTTER
    centre = _uniform((b, k, 2), (0.0, 1.0), generator, device, dtype)
    half = _uniform((b, k, 2), (0.03, 0.15), generator, device, dtype)
    is_box = _uniform((b, k), (0.0, 1.0), generator, device, dtype) < 0.5
    present = _uniform((b, k), (0.0, 1.0), generator, device, dtype) < style.bg_clutter_prob
    colour = _hsv_to_rgb(*_uniform((b, k, 3), (0.0, 1.0), generator, device, dtype).unbind(-1))  # (B, K, 3)
    wh = torch.tensor([w, h], device=device, dtype=dtype)
    item, x, y = _box_fragments(
        ((centre - half) * wh - 1.5).view(-1, 2), ((centre + half) * wh + 0.5).view(-1, 2), present.view(-1), h, w
    )
    if item.numel() == 0:
        return bg.clamp_(0.0, 1.0)
    c, hf = centre.view(-1, 2)[item], half.view(-1, 2)[item]  # (F, 2)
    dx = ((x.to(dtype) + 0.5) / w - c[:, 0]) / hf[:, 0]
    dy = ((y.to(dtype) + 0.5) / h - c[:, 1]) / hf[:, 1]
    ellipse = dx.square() + dy.square() < 1.0
    box = torch.maximum(dx.abs(), dy.abs()) < 1.0
    inside = torch.where(is_box.view(-1)[item], box, ellipse)
    # the last present shape covering a pixel wins
    bi = torch.div(item, k, rounding_mode="floor")
    top_shape = torch.zeros(b * h * w, device=device, dtype=torch.long)
    top_shape.scatter_reduce_(0, ((bi * h + y) * w + x)[inside], (item % k + 1)[inside], "amax")
    # blend the shape colours in at the covered pixels only
    covered = top_shape.nonzero().squeeze(1)  # (N,) linear (b, row, col)
    img_i, pix = torch.div(covered, h * w, rounding_mode="floor"), covered % (h * w)
    flat = bg.view(b, 3, h * w)
    flat[img_i, :, pix] = 0.85 * colour[img_i, top_shape[covered] - 1] + 0.15 * flat[img_i, :, pix]
    return bg.clamp_(0.0, 1.0)


def _draw(style: DomainStyle, b: int, p: int, h: int, w: int, generator, device, dtype) -> _Draws:
    colours = _draw_colours(style, b, p, generator, device, dtype)
    striped = _uniform((b, p), (0.0, 1.0), generator, device, dtype) < style.stripe_prob
    stripes = striped.to(dtype) * _uniform((b, p), (0.4, 0.8), generator, device, dtype)
    stripe_freq = _uniform((b, p), (3.0, 7.0), generator, device, dtype)
    scale = _uniform((b, p), style.limb_scale, generator, device, dtype)
    hairline = _uniform((b, p), (-0.1, 0.5), generator, device, dtype)
    az = _uniform((b,), (-math.pi, math.pi), generator, device, dtype)
    el = _uniform((b,), (0.2, 1.0), generator, device, dtype)
    light = torch.stack((el.cos() * az.sin(), -el.sin() * 0.5 + 0.0 * az, -el.cos() * az.cos().abs() - 0.3), -1)
    light = light / light.norm(dim=-1, keepdim=True)
    ambient = _uniform((b,), style.ambient, generator, device, dtype)
    diffuse = _uniform((b,), style.diffuse, generator, device, dtype)
    background = _draw_background(style, b, h, w, generator, device, dtype)
    gain = _uniform((b,), (0.9, 1.1), generator, device, dtype).unsqueeze(-1) * (
        1.0 + style.tint * _uniform((b, 3), (-1.0, 1.0), generator, device, dtype)
    )
    vignette = _uniform((b,), style.vignette, generator, device, dtype)
    blur = _uniform((b,), style.blur_sigma, generator, device, dtype)
    noise_std = _uniform((b,), style.noise_std, generator, device, dtype)
    noise = _normal((b, 3, h, w), generator, device, dtype).mul_(noise_std.view(b, 1, 1, 1))
    return _Draws(
        colours, stripes, stripe_freq, scale, hairline, light, ambient, diffuse, background, gain, vignette, blur, noise
    )


# ----------------------------------------------------------------------------------------------------------------
# rasterisation


# Every (image, person, part) is an *item*. An item is evaluated only at the pixels of its screen-space bounding
# box: the boxes' pixels are enumerated into one flat list of *fragments* (item, pixel), so the work grows with
# the area the bodies cover, not with B x P x parts x H x W. A fragment's depth and the item's draw order pack
# into one int64 key; a scatter-amin of the keys is the z-buffer, and only the winning fragment of each pixel is
# shaded. Ties go to the earlier part, then the lower person index.

_ORDER_BITS = 20  # draw order (part * P + person) in the low bits of a z-buffer key
_PART_ORDER = {"capsule": 0, "torso": len(_CAPSULES), "head": len(_CAPSULES) + len(_TORSO_TRIANGLES)}
# capsule parts (the head sphere is the 15th, a capsule of zero length)
_CAP_A = tuple(c[0] for c in _CAPSULES) + (1,)
_CAP_B = tuple(c[1] for c in _CAPSULES) + (2,)
_CAP_T0 = tuple(c[2] for c in _CAPSULES) + (_HEAD_CENTRE,)
_CAP_T1 = tuple(c[3] for c in _CAPSULES) + (_HEAD_CENTRE,)
_CAP_RADIUS = tuple(c[4] for c in _CAPSULES) + (_HEAD_RADIUS_MM,)
_CAP_SLOT = tuple(c[5] for c in _CAPSULES) + (2,)  # head: skin, or hair (slot 4) per pixel
_CAP_ORDER = tuple(range(len(_CAPSULES))) + (_PART_ORDER["head"],)
_NUM_CAP = len(_CAP_A)


def _sortable_key(z: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Depths (F,) and draw orders (F,) long -> int64 keys whose order is (z, order) lexicographic.

    Depths compare as float32 (a float64 input keeps its order up to float32 ties, broken by draw order).
    """
    bits = z.float().view(torch.int32).long()
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + (1 << 31)  # monotonic in z, in [0, 2^32)
    return (bits << _ORDER_BITS) | order


def _box_fragments(lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, height: int, width: int):
    """Enumerate the pixels of per-item boxes.

    Args:
        lo, hi: (N, 2) float box corners (x, y) in pixel-index units: pixels floor(lo) .. floor(hi), inclusive.
        keep: (N,) bool, items to enumerate at all.
        height, width: image H and W; boxes are clipped to it.

    Returns:
        item (F,), x (F,), y (F,) long: the item and pixel column/row of every fragment.
    """
    device = lo.device
    finite = torch.isfinite(lo).all(-1) & torch.isfinite(hi).all(-1)
    size = torch.tensor([width, height], device=device)
    lo_i = torch.where(finite.unsqueeze(-1), lo, 0.0).clamp(-1.0, max(width, height)).floor().long().clamp(min=0)
    hi_i = torch.where(finite.unsqueeze(-1), hi, -1.0).clamp(-1.0, max(width, height)).floor().long()
    hi_i = torch.minimum(hi_i, size - 1)
    wh = (hi_i - lo_i + 1).clamp(min=0)  # (N, 2)
    count = torch.where(keep & finite, wh[:, 0] * wh[:, 1], 0)
    total = int(count.sum())
    item = torch.repeat_interleave(torch.arange(len(count), device=device), count, output_size=total)
    start = torch.cumsum(count, 0) - count
    local = torch.arange(total, device=device) - start[item]
    w = wh[item, 0]
    row, col = torch.div(local, w, rounding_mode="floor"), local % w
    lo_f = lo_i[item]
    return item, lo_f[:, 0] + col, lo_f[:, 1] + row


def rasterize_bodies(
    poses: torch.Tensor,
    joints_2d: torch.Tensor,
    mask: torch.Tensor,
    colours: torch.Tensor,
    *,
    image_size: int = 224,
    intrinsics: Intrinsics | None = None,
    scale: torch.Tensor | None = None,
    stripes: torch.Tensor | None = None,
    stripe_freq: torch.Tensor | None = None,
    hairline: torch.Tensor | None = None,
    light: torch.Tensor | None = None,
    ambient: torch.Tensor | None = None,
    diffuse: torch.Tensor | None = None,
) -> BodyRaster:
    """Z-buffered, shaded bodies of every person in every image.

    Each (image, person, part) is evaluated only inside its screen-space bounding box, so time and memory grow
    with the image area the bodies cover (at most B x P x 17 x H x W values, typically a few x B x H x W).

    Args:
        poses: (B, P, 15, 3) camera-frame joints, millimetres.
        joints_2d: (B, P, 15, 2) their projections, pixels.
        mask: (B, P) bool, which person slots are real.
        colours: (B, P, 6, 3) RGB in [0, 1]: shirt, pants, skin, forearm, hair, stripe colour.
        image_size: H = W, pixels.
        intrinsics: camera; default ``Intrinsics.for_image(image_size)``.
        scale: (B, P) radius multiplier (default 1).
        stripes: (B, P) stripe amplitude in [0, 1] (default 0); stripe_freq: (B, P) stripes per part.
        hairline: (B, P) head height (units of the head radius, from its centre) above which hair is drawn.
        light: (B, 3) unit vector towards the light; ambient, diffuse: (B,) light intensities.

    Returns:
        BodyRaster(rgb (B, 3, H, W), owner (B, H, W), depth (B, H, W)).
    """
    b, p = mask.shape
    s = image_size
    device, dtype = poses.device, poses.dtype
    if p * (len(_CAPSULES) + len(_TORSO_TRIANGLES) + 1) >= 1 << _ORDER_BITS:
        raise ValueError(f"too many people per image for the z-buffer keys: {p}")
    intr = intrinsics or Intrinsics.for_image(image_size)
    ones = torch.ones(b, p, device=device, dtype=dtype)
    scale = ones if scale is None else scale
    stripes = 0 * ones if stripes is None else stripes
    stripe_freq = 5 * ones if stripe_freq is None else stripe_freq
    hairline = 0.3 * ones if hairline is None else hairline
    if light is None:
        light = torch.tensor([0.3, -0.5, -0.8], device=device, dtype=dtype).expand(b, 3)
        light = light / light.norm(dim=-1, keepdim=True)
    ambient = torch.full((b,), 0.55, device=device, dtype=dtype) if ambient is None else ambient
    diffuse = torch.full((b,), 0.45, device=device, dtype=dtype) if diffuse is None else diffuse
    focal = intr.focal

    # facing direction: normal of (r_shoulder, l_shoulder, hip centre) towards the front of the body
    hip_mid = 0.5 * (poses[:, :, 9] + poses[:, :, 10])
    front = torch.linalg.cross(poses[:, :, 4] - poses[:, :, 3], hip_mid - poses[:, :, 3], dim=-1)
    # right-to-left x shoulder-to-hip points out of the chest for a person in our canonical frame
    front = front / front.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    facing = front[..., 2] < 0.0  # chest towards the camera
    torso_normal = torch.where(facing.unsqueeze(-1), front, -front)  # (B, P, 3)

    # ---- capsules (and the head sphere): items (B, P, 15)
    ja, jb = list(_CAP_A), list(_CAP_B)
    t0 = torch.tensor(_CAP_T0, device=device, dtype=dtype).view(1, 1, -1, 1)
    t1 = torch.tensor(_CAP_T1, device=device, dtype=dtype).view(1, 1, -1, 1)
    pa, pb = poses[:, :, ja], poses[:, :, jb]  # (B, P, 15, 3)
    pa3, pb3 = pa + t0 * (pb - pa), pa + t1 * (pb - pa)
    ua = torch.where(t0 == 0.0, joints_2d[:, :, ja], _project(pa3, intr))  # (B, P, 15, 2)
    ub = torch.where(t1 == 1.0, joints_2d[:, :, jb], _project(pb3, intr))
    radius = torch.tensor(_CAP_RADIUS, device=device, dtype=dtype) * scale.unsqueeze(-1)  # (B, P, 15)
    za, zb = pa3[..., 2], pb3[..., 2]
    r_max = focal * radius / torch.minimum(za, zb).clamp(min=1.0)  # px, the widest the capsule gets
    lo = torch.minimum(ua, ub) - r_max.unsqueeze(-1) - 1.0
    hi = torch.maximum(ua, ub) + r_max.unsqueeze(-1) + 1.0
    keep = mask.unsqueeze(-1).expand(b, p, _NUM_CAP).reshape(-1)
    item, x, y = _box_fragments(lo.reshape(-1, 2) - 0.5, hi.reshape(-1, 2) - 0.5, keep, s, s)
    d = ub - ua
    length2 = d.square().sum(-1).clamp(min=1e-6)
    params = torch.cat((ua, d, torch.stack((length2, za, zb - za, radius), -1)), -1).view(-1, 8)[item]  # (F, 8)
    ua_x, ua_y, d_x, d_y, length2_f, za_f, dz_f, radius_f = params.unbind(-1)
    rx = x.to(dtype) + 0.5 - ua_x
    ry = y.to(dtype) + 0.5 - ua_y
    t = ((rx * d_x + ry * d_y) / length2_f).clamp(0.0, 1.0)
    ox, oy = rx - t * d_x, ry - t * d_y  # offset from the axis
    z_axis = za_f + t * dz_f
    r_px = focal * radius_f / z_axis.clamp(min=1.0)
    q = (ox.square() + oy.square()) / r_px.square()
    cap_in = (q < 1.0).nonzero().squeeze(1)
    item, x, y, q, z_axis, radius_f = item[cap_in], x[cap_in], y[cap_in], q[cap_in], z_axis[cap_in], radius_f[cap_in]
    bulge = (1.0 - q).clamp(min=0.0).sqrt()
    cap_z = z_axis - radius_f * bulge
    part = item % _NUM_CAP
    cap_bp = torch.div(item, _NUM_CAP, rounding_mode="floor")  # b * P + p
    cap_order = torch.tensor(_CAP_ORDER, device=device)[part] * p + cap_bp % p
    cap_pix = (torch.div(cap_bp, p, rounding_mode="floor") * s + y) * s + x
    cap_key = _sortable_key(cap_z, cap_order)

    # ---- torso triangles: items (B, P, 2)
    tri_idx = torch.tensor(_TORSO_TRIANGLES, device=device)  # (2, 3)
    tri_uv = joints_2d[:, :, tri_idx]  # (B, P, 2, 3, 2)
    tri_z = poses[:, :, tri_idx, 2]  # (B, P, 2, 3)
    (x0, y0), (x1, y1), (x2, y2) = (tri_uv[..., i, :].unbind(-1) for i in range(3))
    denom = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)  # (B, P, 2)
    ok = (denom.abs() > 1e-3) & mask.unsqueeze(-1)
    denom = torch.where(ok, denom, torch.ones_like(denom))
    lo, hi = tri_uv.amin(-2) - 1.0, tri_uv.amax(-2) + 1.0
    item, x, y = _box_fragments(lo.reshape(-1, 2) - 0.5, hi.reshape(-1, 2) - 0.5, ok.reshape(-1), s, s)
    tri_params = torch.stack((x2, y2, y1 - y2, x2 - x1, y2 - y0, x0 - x2, denom), -1).view(-1, 7)[item]
    x2_f, y2_f, a0, b0, a1, b1, denom_f = tri_params.unbind(-1)
    gx = x.to(dtype) + 0.5 - x2_f
    gy = y.to(dtype) + 0.5 - y2_f
    w0 = (a0 * gx + b0 * gy) / denom_f
    w1 = (a1 * gx + b1 * gy) / denom_f
    w2 = 1.0 - w0 - w1
    tri_in = ((w0 >= 0) & (w1 >= 0) & (w2 >= 0)).nonzero().squeeze(1)
    item, x, y, w0, w1, w2 = item[tri_in], x[tri_in], y[tri_in], w0[tri_in], w1[tri_in], w2[tri_in]
    tz = tri_z.reshape(-1, 3)[item]
    tri_z_f = (w0 * tz[:, 0] + w1 * tz[:, 1] + w2 * tz[:, 2]) - _TORSO_FRONT_MM
    which = item % 2
    # vertical position for stripes: 0 at the shoulders, 1 at the hips
    tri_along = torch.where(which == 0, w2, w1 + w2)
    tri_bp = torch.div(item, 2, rounding_mode="floor")
    tri_order = (_PART_ORDER["torso"] + which) * p + tri_bp % p
    tri_pix = (torch.div(tri_bp, p, rounding_mode="floor") * s + y) * s + x
    tri_key = _sortable_key(tri_z_f, tri_order)

    # ---- z-buffer: the smallest (depth, order) key per pixel wins
    keys = torch.full((b * s * s,), torch.iinfo(torch.int64).max, device=device, dtype=torch.long)
    keys.scatter_reduce_(0, torch.cat((cap_pix, tri_pix)), torch.cat((cap_key, tri_key)), "amin")
    cap_win = (cap_key == keys[cap_pix]).nonzero().squeeze(1)
    tri_win = (tri_key == keys[tri_pix]).nonzero().squeeze(1)

    # ---- shade the winning fragments only (each pixel has exactly one)
    ci = cap_in[cap_win]  # into the capsule fragments before the inside test
    cap_nx, cap_ny = ox[ci] / r_px[ci], oy[ci] / r_px[ci]
    part = part[cap_win]
    cap_bp = cap_bp[cap_win]
    # head: hair above the hairline (along the neck -> head direction on screen) or seen from behind
    up = ua[:, :, -1] - joints_2d[:, :, 1]
    up = (up / up.norm(dim=-1, keepdim=True).clamp(min=1e-6)).view(-1, 2)[cap_bp]  # (N, 2)
    height = cap_nx * up[:, 0] + cap_ny * up[:, 1]
    hair = (height > hairline.reshape(-1)[cap_bp]) | ~facing.reshape(-1)[cap_bp]
    cap_slot = torch.tensor(_CAP_SLOT, device=device)[part]
    cap_slot = torch.where((part == _NUM_CAP - 1) & hair, 4, cap_slot)
    cap_stripe = torch.tensor([slot in (0, 1) for slot in _CAP_SLOT], device=device)[part]
    tri_bp = tri_bp[tri_win]
    normal = torch.cat(
        (torch.stack((cap_nx, cap_ny, -bulge[cap_win]), -1), torso_normal.reshape(-1, 3)[tri_bp]), 0
    )  # (N, 3)
    along = torch.cat((t[ci], tri_along[tri_win]))
    slot = torch.cat((cap_slot, torch.zeros_like(tri_bp)))
    stripe_on = torch.cat((cap_stripe, torch.ones_like(tri_bp, dtype=torch.bool)))
    bp = torch.cat((cap_bp, tri_bp))  # (N,) b * P + p
    bi = torch.div(bp, p, rounding_mode="floor")
    pix = torch.cat((cap_pix[cap_win], tri_pix[tri_win]))
    palette = colours.reshape(-1, _NUM_SLOTS, 3)
    col = palette[bp, slot]  # (N, 3)
    square = torch.sin(2 * math.pi * along * stripe_freq.reshape(-1)[bp]) > 0
    amp = stripes.reshape(-1)[bp] * (square & stripe_on).to(dtype)
    col = col + amp.unsqueeze(-1) * (palette[bp, 5] - col)
    lambert = (normal * light[bi]).sum(-1).clamp(min=0.0)
    shade = ambient[bi] + diffuse[bi] * lambert

    rgb = torch.zeros(b * s * s, 3, device=device, dtype=dtype)
    rgb[pix] = col * shade.unsqueeze(-1)
    owner = torch.full((b * s * s,), -1, device=device, dtype=torch.long)
    owner[pix] = bp % p
    depth = torch.full((b * s * s,), math.inf, device=device, dtype=dtype)
    depth[pix] = torch.cat((cap_z[cap_win], tri_z_f[tri_win]))
    rgb = rgb.view(b, s, s, 3).permute(0, 3, 1, 2)  # (B, 3, H, W)
    return BodyRaster(rgb, owner.view(b, s, s), depth.view(b, s, s))


def _project(points: torch.Tensor, intr: Intrinsics) -> torch.Tensor:
    z = points[..., 2:3].clamp(min=1.0)
    return intr.focal * points[..., :2] / z + points.new_tensor([intr.cx, intr.cy])


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
    draws = _draw(st, b, p, h, w, generator, device, dtype)

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


def synthetic_batch(
    batch_size: int,
    style: str | DomainStyle = "target",
    generator: torch.Generator | None = None,
    *,
    image_size: int = 224,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **scene_overrides: Any,
) -> dict[str, torch.Tensor]:
    """A batch of rendered images of a style with its ground truth.

    The scenes come from ``compose_scenes(batch_size, **style.scene_kwargs, **scene_overrides)``.

    Returns:
        dict with ``image (B, 3, H, W)`` in [0, 1] and GT (evaluation and supervised baselines only):
        ``poses (B, P, 15, 3)`` camera mm, ``canonical (B, P, 15, 3)``, ``rotation (B, P, 6)``, ``roots_px (B, P, 2)``,
        ``depth (B, P)`` mm, ``joints_2d (B, P, 15, 2)`` px, ``root_cells (B, P, 2)`` long, ``mask (B, P)`` bool,
        ``visibility (B, P, 15)`` bool.
    """
    from lightning_mp3d.synth.scenes import compose_scenes

    st = get_style(style)
    kwargs = {**st.scene_kwargs, **scene_overrides}
    scenes = compose_scenes(
        batch_size, generator=generator, image_size=image_size, dtype=dtype, device=device, **kwargs
    )
    rendered = render_images(scenes, st, generator=generator, image_size=image_size)
    out = {"image": rendered.images}
    for key in ("poses", "canonical", "rotation", "roots_px", "depth", "joints_2d", "root_cells", "mask"):
        out[key] = getattr(scenes, key)
    out["visibility"] = rendered.visibility
    return out
