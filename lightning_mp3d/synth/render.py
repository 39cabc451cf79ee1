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
    # The teacher's training domain: studio-like. Frontal-ish people (yaw within +-60 deg, 60 % of the joint
    # angle ranges) standing nearer the camera, saturated primary-hue clothes, plain gradient backdrops, even
    # light, clean optics.
    "source": DomainStyle(
        name="source",
        scene_kwargs={
            "pose_range_scale": 0.6,
            "yaw_range": (-math.pi / 3, math.pi / 3),
            "pitch_range": (-0.12, 0.12),
            "roll_range": (-0.08, 0.08),
            "depth_range": (3000.0, 6000.0),
        },
        limb_scale=(1.0, 1.2),
        saturation=(0.65, 1.0),
        value=(0.6, 1.0),
        hue_centres=(0.0, 0.16, 0.33, 0.6, 0.78),
        hue_spread=0.04,
        skin_value=(0.7, 0.95),
        stripe_prob=0.0,
        short_sleeve_prob=0.3,
        bg_noise=0.04,
        bg_floor=0.05,
        bg_stripes=0.0,
        bg_clutter_prob=0.0,
        bg_saturation=(0.0, 0.15),
        ambient=(0.55, 0.65),
        diffuse=(0.35, 0.45),
        tint=0.02,
        vignette=(0.0, 0.05),
        blur_sigma=(0.3, 0.6),
        noise_std=(0.0, 0.01),
    ),
    # The deployment domain: any orientation, full joint ranges, people up to 8 m away, muted and striped
    # clothes over a broader range of skin tones, textured rooms (perspective floor, striped walls, clutter),
    # coloured uneven light, vignetting, defocus and sensor noise.
    "target": DomainStyle(
        name="target",
        scene_kwargs={
            "pose_range_scale": 1.0,
            "yaw_range": (-math.pi, math.pi),
            "pitch_range": (-0.25, 0.25),
            "roll_range": (-0.15, 0.15),
            "depth_range": (3000.0, 8000.0),
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
        bg_clutter_prob=0.5,
        bg_saturation=(0.1, 0.5),
        ambient=(0.35, 0.6),
        diffuse=(0.3, 0.7),
        tint=0.12,
        vignette=(0.1, 0.35),
        blur_sigma=(0.6, 1.4),
        noise_std=(0.015, 0.045),
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
    """Smooth noise (B, 1, H, W) in [-1, 1] from a cells x cells random lattice, bilinear upsampled."""
    lattice = _uniform((b, 1, cells, cells), (-1.0, 1.0), generator, device, dtype)
    return F.interpolate(lattice, size=size, mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


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
    texture = 0.5 * _value_noise(b, (h, w), 6, generator, device, dtype)
    texture = texture + 0.3 * _value_noise(b, (h, w), 14, generator, device, dtype)
    texture = texture + 0.2 * _value_noise(b, (h, w), 40, generator, device, dtype)
    bg = bg + style.bg_noise * texture
    # perspective checker floor below a random horizon
    horizon = _uniform((b, 1, 1), (0.35, 0.65), generator, device, dtype)
    tile = _uniform((b, 1, 1), (0.3, 0.8), generator, device, dtype)
    below = (yy - horizon).clamp(min=1e-3)
    floor_z = 0.15 / below  # distance along the floor
    floor_x = (xx - 0.5) * floor_z
    checker = ((torch.floor(floor_x / tile) + torch.floor(floor_z / tile)) % 2.0) * 2.0 - 1.0  # (B, H, W)
    fade = (yy > horizon).to(dtype) * (1.0 - torch.exp(-below * 8.0))
    bg = bg + style.bg_floor * (checker * fade).unsqueeze(1)
    # wall stripes above the horizon
    angle = _uniform((b, 1, 1), (0.0, math.pi), generator, device, dtype)
    period = _uniform((b, 1, 1), (0.03, 0.12), generator, device, dtype)
    phase = _uniform((b, 1, 1), (0.0, 2 * math.pi), generator, device, dtype)
    wave = torch.sin(2 * math.pi * (xx * angle.cos() + yy * angle.sin()) / period + phase)
    bg = bg + style.bg_stripes * (wave * (yy <= horizon).to(dtype)).unsqueeze(1)
    # clutter: axis-aligned ellipses and boxes of random colours
    k = _CLUTTER
    centre = _uniform((b, k, 2), (0.0, 1.0), generator, device, dtype)
    half = _uniform((b, k, 2), (0.03, 0.15), generator, device, dtype)
    is_box = _uniform((b, k), (0.0, 1.0), generator, device, dtype) < 0.5
    present = _uniform((b, k), (0.0, 1.0), generator, device, dtype) < style.bg_clutter_prob
    colour = _hsv_to_rgb(*_uniform((b, k, 3), (0.0, 1.0), generator, device, dtype).unbind(-1))  # (B, K, 3)
    dx = (xx.unsqueeze(1) - centre[..., 0, None, None]) / half[..., 0, None, None]  # (B, K, 1, W)
    dy = (yy.unsqueeze(1) - centre[..., 1, None, None]) / half[..., 1, None, None]  # (B, K, H, 1)
    ellipse = dx.square() + dy.square() < 1.0
    box = torch.maximum(dx.abs(), dy.abs()) < 1.0
    inside = torch.where(is_box[..., None, None], box, ellipse) & present[..., None, None]  # (B, K, H, W)
    # the last present shape covering a pixel wins
    order = torch.arange(1, k + 1, device=device).view(1, k, 1, 1)
    top_shape = (inside * order).amax(1)  # (B, H, W), 0 = none
    shape_colour = torch.gather(
        torch.cat((colour.new_zeros(b, 1, 3), colour), 1).transpose(1, 2), 2, top_shape.view(b, 1, -1).expand(b, 3, -1)
    ).view(b, 3, h, w)
    bg = torch.where((top_shape > 0).unsqueeze(1), 0.85 * shape_colour + 0.15 * bg, bg)
    return bg.clamp(0.0, 1.0)


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
    noise = _normal((b, 3, h, w), generator, device, dtype) * noise_std.view(b, 1, 1, 1)
    return _Draws(
        colours, stripes, stripe_freq, scale, hairline, light, ambient, diffuse, background, gain, vignette, blur, noise
    )


# ----------------------------------------------------------------------------------------------------------------
# rasterisation


class _Part(NamedTuple):
    z: torch.Tensor  # (B, P, H, W) surface depth, +inf outside
    normal: torch.Tensor  # (B, P, 3, H, W) or (B, P, 3, 1, 1)
    along: torch.Tensor  # (B, P, H, W) or broadcastable, position along the part in [0, 1] (for stripes)


def _capsule(uv_a, uv_b, z_a, z_b, radius_mm, focal, px, py) -> _Part:
    """A capsule between two projected points with perspective radius. Inputs (B, P, 2), (B, P), px (W,), py (H,)."""
    d = uv_b - uv_a  # (B, P, 2)
    length2 = d.square().sum(-1).clamp(min=1e-6)
    rx = px.view(1, 1, 1, -1) - uv_a[..., 0, None, None]  # (B, P, 1, W)
    ry = py.view(1, 1, -1, 1) - uv_a[..., 1, None, None]  # (B, P, H, 1)
    t = ((rx * d[..., 0, None, None] + ry * d[..., 1, None, None]) / length2[..., None, None]).clamp(0.0, 1.0)
    ox = rx - t * d[..., 0, None, None]  # (B, P, H, W) offset from the axis
    oy = ry - t * d[..., 1, None, None]
    z_axis = z_a[..., None, None] + t * (z_b - z_a)[..., None, None]
    r_px = focal * radius_mm[..., None, None] / z_axis.clamp(min=1.0)
    q = (ox.square() + oy.square()) / r_px.square()
    bulge = (1.0 - q).clamp(min=0.0).sqrt()
    z = torch.where(q < 1.0, z_axis - radius_mm[..., None, None] * bulge, torch.full_like(q, math.inf))
    normal = torch.stack((ox / r_px, oy / r_px, -bulge), 2)  # (B, P, 3, H, W)
    return _Part(z, normal, t)


def _head(neck, top, uv_c, z_c, radius_mm, focal, px, py, facing, hairline, uv_neck) -> tuple[_Part, torch.Tensor]:
    """Head sphere; returns the part and a hair mask (B, P, H, W)."""
    r_px = focal * radius_mm / z_c.clamp(min=1.0)  # (B, P)
    ox = px.view(1, 1, 1, -1) - uv_c[..., 0, None, None]
    oy = py.view(1, 1, -1, 1) - uv_c[..., 1, None, None]
    nx, ny = ox / r_px[..., None, None], oy / r_px[..., None, None]
    nx, ny = torch.broadcast_tensors(nx, ny)
    q = nx.square() + ny.square()
    bulge = (1.0 - q).clamp(min=0.0).sqrt()
    z = torch.where(q < 1.0, z_c[..., None, None] - radius_mm[..., None, None] * bulge, torch.full_like(q, math.inf))
    up = uv_c - uv_neck
    up = up / up.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # (B, P, 2)
    height = nx * up[..., 0, None, None] + ny * up[..., 1, None, None]
    hair = (height > hairline[..., None, None]) | ~facing[..., None, None]
    return _Part(z, torch.stack((nx, ny, -bulge), 2), height.clamp(0.0, 1.0)), hair


def _triangle(uv, z, tri, normal, px, py) -> _Part:
    """A flat triangle of joints ``tri`` with per-vertex depth; ``normal`` (B, P, 3) is constant."""
    (x0, y0), (x1, y1), (x2, y2) = (uv[:, :, i].unbind(-1) for i in tri)
    denom = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)  # (B, P)
    ok = denom.abs() > 1e-3
    denom = torch.where(ok, denom, torch.ones_like(denom))[..., None, None]
    gx = px.view(1, 1, 1, -1) - x2[..., None, None]  # (B, P, 1, W)
    gy = py.view(1, 1, -1, 1) - y2[..., None, None]  # (B, P, H, 1)
    w0 = ((y1 - y2)[..., None, None] * gx + (x2 - x1)[..., None, None] * gy) / denom
    w1 = ((y2 - y0)[..., None, None] * gx + (x0 - x2)[..., None, None] * gy) / denom
    w2 = 1.0 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & ok[..., None, None]
    zz = w0 * z[:, :, tri[0], None, None] + w1 * z[:, :, tri[1], None, None] + w2 * z[:, :, tri[2], None, None]
    zz = torch.where(inside, zz - _TORSO_FRONT_MM, torch.full_like(zz, math.inf))
    # vertical position for stripes: 0 at the shoulders, 1 at the hips
    along = w2 if tri == _TORSO_TRIANGLES[0] else (w1 + w2)
    return _Part(zz, normal[..., None, None], along)


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

    Loops over the 17 body parts only; each part is evaluated for all images, people and pixels at once
    (B x P x H x W values), so callers bound memory by chunking the batch.

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
    device, dtype = poses.device, poses.dtype
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

    px = torch.arange(image_size, device=device, dtype=dtype) + 0.5
    py = px
    z = poses[..., 2]  # (B, P, 15)
    focal = intr.focal

    # facing direction: normal of (r_shoulder, l_shoulder, hip centre) towards the front of the body
    hip_mid = 0.5 * (poses[:, :, 9] + poses[:, :, 10])
    front = torch.linalg.cross(poses[:, :, 4] - poses[:, :, 3], hip_mid - poses[:, :, 3], dim=-1)
    # right-to-left x shoulder-to-hip points out of the chest for a person in our canonical frame
    front = front / front.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    facing = front[..., 2] < 0.0  # chest towards the camera
    torso_normal = torch.where(facing.unsqueeze(-1), front, -front)

    zbuf = torch.full((b, image_size, image_size), math.inf, device=device, dtype=dtype)
    owner = torch.full((b, image_size, image_size), -1, device=device, dtype=torch.long)
    rgb = torch.zeros(b, 3, image_size, image_size, device=device, dtype=dtype)
    valid = mask[..., None, None]

    def composite(part: _Part, slot: torch.Tensor | int, stripe_on: bool) -> None:
        nonlocal zbuf, owner, rgb
        zp = torch.where(valid, part.z, torch.full_like(part.z, math.inf))
        zmin, who = zp.min(1)  # (B, H, W)
        better = zmin < zbuf
        if not bool(better.any()):
            return
        normal = part.normal.expand(-1, -1, 3, image_size, image_size)
        idx = who[:, None, None].expand(b, 1, 3, image_size, image_size)
        n = torch.gather(normal, 1, idx).squeeze(1)  # (B, 3, H, W)
        lambert = (n * light[..., None, None]).sum(1).clamp(min=0.0)
        shade = ambient[:, None, None] + diffuse[:, None, None] * lambert  # (B, H, W)
        if isinstance(slot, int):
            base = colours[:, :, slot]  # (B, P, 3)
            col = torch.gather(base.transpose(1, 2), 2, who.view(b, 1, -1).expand(b, 3, -1)).view(rgb.shape)
        else:  # per-pixel slot choice (B, P, H, W) of slot indices
            slot_px = torch.gather(slot, 1, who.unsqueeze(1)).squeeze(1)  # (B, H, W)
            flat = colours.view(b, p * _NUM_SLOTS, 3)
            lin = (who * _NUM_SLOTS + slot_px).view(b, 1, -1).expand(b, 3, -1)
            col = torch.gather(flat.transpose(1, 2), 2, lin).view(rgb.shape)
        if stripe_on:
            along = part.along.expand(b, p, image_size, image_size)
            sq = (torch.sin(2 * math.pi * along * stripe_freq[..., None, None]) > 0).to(dtype)  # (B, P, H, W)
            amp = torch.gather(stripes[..., None, None].expand_as(sq) * sq, 1, who.unsqueeze(1)).squeeze(1)
            stripe_col = torch.gather(colours[:, :, 5].transpose(1, 2), 2, who.view(b, 1, -1).expand(b, 3, -1)).view(
                rgb.shape
            )
            col = col + amp.unsqueeze(1) * (stripe_col - col)
        rgb = torch.where(better.unsqueeze(1), col * shade.unsqueeze(1), rgb)
        owner = torch.where(better, who, owner)
        zbuf = torch.where(better, zmin, zbuf)

    for a, c, t0, t1, radius, slot in _CAPSULES:
        pa3 = poses[:, :, a] + t0 * (poses[:, :, c] - poses[:, :, a])
        pb3 = poses[:, :, a] + t1 * (poses[:, :, c] - poses[:, :, a])
        ua = joints_2d[:, :, a] if t0 == 0.0 else _project(pa3, intr)
        ub = joints_2d[:, :, c] if t1 == 1.0 else _project(pb3, intr)
        part = _capsule(ua, ub, pa3[..., 2], pb3[..., 2], radius * scale, focal, px, py)
        composite(part, slot, stripe_on=slot in (0, 1))

    for tri in _TORSO_TRIANGLES:
        composite(_triangle(joints_2d, z, tri, torso_normal, px, py), 0, stripe_on=True)

    centre = poses[:, :, 1] + _HEAD_CENTRE * (poses[:, :, 2] - poses[:, :, 1])  # (B, P, 3)
    head, hair = _head(
        poses[:, :, 1],
        poses[:, :, 2],
        _project(centre, intr),
        centre[..., 2],
        _HEAD_RADIUS_MM * scale,
        focal,
        px,
        py,
        facing,
        hairline,
        joints_2d[:, :, 1],
    )
    composite(head, torch.where(hair, 4, 2), stripe_on=False)
    return BodyRaster(rgb, owner, zbuf)


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
    img = torch.cat(images, 0)
    # lighting and optics for the whole batch
    yy = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h - 0.5
    xx = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w - 0.5
    r2 = (yy.view(-1, 1).square() + xx.view(1, -1).square()) * 2.0  # 1 at the corners
    img = img * draws.gain.view(b, 3, 1, 1) * (1.0 - draws.vignette.view(b, 1, 1, 1) * r2)
    if float(draws.blur.max()) > 0.05:
        img = _gaussian_blur(img, draws.blur)
    img = (img + draws.noise).clamp(0.0, 1.0)
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
