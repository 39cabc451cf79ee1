"""Random draws of the embedded D_I renderer: every appearance choice of a batch, made before rasterising.

Per person: clothing/skin/hair palettes, stripes, body thickness, hairline; per image: light, procedural textured
background (value noise, perspective checker floor, wall stripes, clutter shapes), tint, vignette, blur and sensor
noise. The draws come in a fixed order, so a generator seeded the same way gives the same images whatever chunk
size ``synth.render.render_images`` rasterises with. Pure tensor code: no Lightning import.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lightning_mp3d.synth.raster import box_fragments
from lightning_mp3d.synth.styles import DomainStyle

__all__ = ["Appearance", "draw_appearance"]

_CLUTTER = 6  # background clutter shapes per image (target style)


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


class Appearance(NamedTuple):
    """Every random appearance choice of a batch of B images with P person slots."""

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
    item, x, y = box_fragments(
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


def draw_appearance(style: DomainStyle, b: int, p: int, h: int, w: int, generator, device, dtype) -> Appearance:
    """Draw a batch's appearance from ``style`` with ``generator`` (all draws, in a fixed order), on ``device``."""
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
    return Appearance(
        colours, stripes, stripe_freq, scale, hairline, light, ambient, diffuse, background, gain, vignette, blur, noise
    )
