"""The body rasteriser of the embedded D_I renderer: z-buffered, shaded capsule/sphere/quad bodies.

Bodies are built from the camera-centric 3D skeleton: 14 limb capsules whose radius follows perspective
(``r_px = f R_mm / z``), a head sphere (face or hair, depending on whether the person faces the camera) and a
torso quad (two triangles over the shoulders and hips); a shirt's V neckline shows skin on the chest of a person
facing the camera, so that the front and the back differ by more than the few pixels of a face. A per-pixel
z-buffer over every (person, part) orders the surfaces, so nearer people occlude farther ones. Pixel (row i, col j)
has its centre at (j + 0.5, i + 0.5) as in ``geometry/camera.py``; 3D in millimetres, camera axes x right / y down /
z forward. Pure tensor code: no Lightning import.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lightning_mp3d.geometry.camera import Intrinsics

__all__ = ["NUM_SLOTS", "BodyRaster", "box_fragments", "rasterize_bodies"]

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
# The shirt's V neckline (skin, front only): it reaches this far down the torso (0 shoulders, 1 hips) and is this
# wide on each side of the centre at the top (torso: fraction of the shoulder-to-shoulder width; spine: its radius).
_NECKLINE_DEPTH = 0.35
_NECKLINE_HALF_WIDTH = 0.22
_NECKLINE_SPINE_HALF_WIDTH = 0.8
_HEAD_CENTRE = 0.62  # head sphere centre along neck -> head top
_HEAD_RADIUS_MM = 105.0
NUM_SLOTS = 6  # shirt, pants, skin, forearm, hair, stripe colour


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


def box_fragments(lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, height: int, width: int):
    """Enumerate the pixels of per-item boxes.

    Args:
        lo: (N, 2) float lower box corners (x, y) in pixel-index units: pixels floor(lo) .. floor(hi), inclusive.
        hi: (N, 2) float upper box corners (x, y), likewise.
        keep: (N,) bool, items to enumerate at all.
        height: image H; boxes are clipped to it.
        width: image W; boxes are clipped to it.

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
        stripes: (B, P) stripe amplitude in [0, 1] (default 0).
        stripe_freq: (B, P) stripes per part.
        hairline: (B, P) head height (units of the head radius, from its centre) above which hair is drawn.
        light: (B, 3) unit vector towards the light.
        ambient: (B,) ambient light intensity (default 0.55).
        diffuse: (B,) diffuse light intensity (default 0.45).

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
    front = torch.linalg.cross(hip_mid - poses[:, :, 3], poses[:, :, 4] - poses[:, :, 3], dim=-1)
    # shoulder-to-hip x right-to-left shoulder points out of the chest (canonical frame: -Z x Y = X, the front)
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
    item, x, y = box_fragments(lo.reshape(-1, 2) - 0.5, hi.reshape(-1, 2) - 0.5, keep, s, s)
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
    item, x, y = box_fragments(lo.reshape(-1, 2) - 0.5, hi.reshape(-1, 2) - 0.5, ok.reshape(-1), s, s)
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
    tri_across = torch.where(which == 0, w1 + w2, w1)  # 0 at the right side, 1 at the left side
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
    # the shirt's front: a V neckline shows skin at the top of the chest when it faces the camera (spine and torso)
    side = (ox[ci] * -d_y[ci] + oy[ci] * d_x[ci]) / (length2_f[ci].sqrt() * r_px[ci])  # -1..1 across the spine
    cap_neck = (part == 0) & (1.0 - t[ci] < _NECKLINE_DEPTH * (1.0 - side.abs() / _NECKLINE_SPINE_HALF_WIDTH))
    cap_neck = cap_neck & facing.reshape(-1)[cap_bp]
    cap_slot = torch.where(cap_neck, 2, cap_slot)
    cap_stripe = torch.tensor([slot in (0, 1) for slot in _CAP_SLOT], device=device)[part]
    tri_bp = tri_bp[tri_win]
    # the shirt's front: a V neckline shows skin below the neck when the chest faces the camera
    neckline = tri_along[tri_win] < _NECKLINE_DEPTH * (1.0 - (tri_across[tri_win] - 0.5).abs() / _NECKLINE_HALF_WIDTH)
    neckline = neckline & facing.reshape(-1)[tri_bp]
    normal = torch.cat(
        (torch.stack((cap_nx, cap_ny, -bulge[cap_win]), -1), torso_normal.reshape(-1, 3)[tri_bp]), 0
    )  # (N, 3)
    along = torch.cat((t[ci], tri_along[tri_win]))
    slot = torch.cat((cap_slot, torch.where(neckline, 2, torch.zeros_like(tri_bp))))
    stripe_on = torch.cat((cap_stripe & ~cap_neck, ~neckline))
    bp = torch.cat((cap_bp, tri_bp))  # (N,) b * P + p
    bi = torch.div(bp, p, rounding_mode="floor")
    pix = torch.cat((cap_pix[cap_win], tri_pix[tri_win]))
    palette = colours.reshape(-1, NUM_SLOTS, 3)
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
