"""The embedded D_I renderer: determinism, occlusion order, ranges, styles."""

import math
from typing import NamedTuple

import torch

from lightning_mp3d.geometry import Intrinsics, euler_to_sincos, project, rotate, translate
from lightning_mp3d.synth.batches import synthetic_batch
from lightning_mp3d.synth.raster import rasterize_bodies
from lightning_mp3d.synth.render import render_images
from lightning_mp3d.synth.styles import DOMAIN_STYLES, DomainStyle

K = Intrinsics.for_image(224)


class _Scene(NamedTuple):
    poses: torch.Tensor
    joints_2d: torch.Tensor
    mask: torch.Tensor


def _standing() -> torch.Tensor:
    """A hand-made upright canonical pose (X front, Y left, Z up), mm, arms down."""
    return torch.tensor(
        [[0, 0, 0], [0, 0, 490], [0, 0, 799], [0, -220, 490], [0, 220, 490], [0, -260, 174], [0, 260, 174],
         [0, -270, -74], [0, 270, -74], [0, -162, 0], [0, 162, 0], [0, -162, -416], [0, 162, -416],
         [0, -162, -835], [0, 162, -835]],
        dtype=torch.float32,
    )  # fmt: skip


def _two_people(near_depth: float = 3000.0, far_depth: float = 6000.0, far_u: float = 112.0) -> _Scene:
    """Two frontal people, the near one at the image centre, the far one at column far_u."""
    p_r = rotate(_standing(), euler_to_sincos(torch.zeros(3))).expand(1, 2, 15, 3)
    roots = torch.tensor([[[112.0, 112.0], [far_u, 112.0]]])
    depth = torch.tensor([[near_depth, far_depth]])
    p_g = translate(p_r, roots, depth, K)
    return _Scene(p_g, project(p_g, K), torch.ones(1, 2, dtype=torch.bool))


CLEAN = DomainStyle(name="clean", blur_sigma=(0.0, 0.0), noise_std=(0.0, 0.0), vignette=(0.0, 0.0))


def test_render_is_deterministic_under_a_seed():
    a = synthetic_batch(2, "target", torch.Generator().manual_seed(3))
    b = synthetic_batch(2, "target", torch.Generator().manual_seed(3))
    c = synthetic_batch(2, "target", torch.Generator().manual_seed(4))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["image"], c["image"])


def test_render_does_not_depend_on_chunk_size():
    scene = _two_people(far_u=80.0)
    scene = _Scene(*(t.expand(3, *t.shape[1:]).clone() for t in scene))
    full = render_images(scene, "target", generator=torch.Generator().manual_seed(0))
    chunked = render_images(scene, "target", generator=torch.Generator().manual_seed(0), max_elements=2 * 224 * 224)
    torch.testing.assert_close(full.images, chunked.images)
    assert torch.equal(full.visibility, chunked.visibility)


def test_images_shape_range_and_gt_keys():
    batch = synthetic_batch(3, "source", torch.Generator().manual_seed(0))
    image = batch["image"]
    assert image.shape == (3, 3, 224, 224) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0 and image.std() > 0.05
    p = batch["mask"].shape[1]
    assert batch["visibility"].shape == (3, p, 15) and batch["visibility"].dtype == torch.bool
    assert batch["joints_2d"].shape == (3, p, 15, 2) and batch["poses"].shape == (3, p, 15, 3)
    # padded person slots are never visible
    assert not batch["visibility"][~batch["mask"]].any()


def test_nearer_person_occludes_farther_one():
    both = _two_people()
    gen = torch.Generator
    render = render_images(both, CLEAN, generator=gen().manual_seed(0))
    near_only = render_images(_Scene(both.poses, both.joints_2d, torch.tensor([[True, False]])), CLEAN,
                              generator=gen().manual_seed(0))  # fmt: skip
    far_only = render_images(_Scene(both.poses, both.joints_2d, torch.tensor([[False, True]])), CLEAN,
                             generator=gen().manual_seed(0))  # fmt: skip
    # the far person's pelvis pixel lies on the near person's body: the colour there is the near person's
    u, v = both.joints_2d[0, 1, 0].floor().long().tolist()
    torch.testing.assert_close(render.images[0, :, v, u], near_only.images[0, :, v, u])
    assert not torch.allclose(render.images[0, :, v, u], far_only.images[0, :, v, u], atol=0.02)
    # the same holds if the people swap depths: the (now nearer) second person is drawn on top
    swapped = _two_people(near_depth=6000.0, far_depth=3000.0)
    front = render_images(swapped, CLEAN, generator=gen().manual_seed(0))
    front_only = render_images(_Scene(swapped.poses, swapped.joints_2d, torch.tensor([[False, True]])), CLEAN,
                               generator=gen().manual_seed(0))  # fmt: skip
    u2, v2 = swapped.joints_2d[0, 0, 0].floor().long().tolist()
    torch.testing.assert_close(front.images[0, :, v2, u2], front_only.images[0, :, v2, u2])
    # visibility: the far person's covered joints are hidden, the near person's all visible
    assert render.visibility[0, 0].all()
    assert not render.visibility[0, 1, 0] and not render.visibility[0, 1, 1]
    assert far_only.visibility[0, 1].all()


def test_joints_outside_the_image_are_not_visible():
    scene = _two_people(far_u=112.0)
    shifted = scene.joints_2d.clone()
    shifted[0, 0, :, 0] += 400.0  # pretend the near person projects far to the right
    out = render_images(_Scene(scene.poses, shifted, scene.mask), CLEAN, generator=torch.Generator().manual_seed(0))
    assert not out.visibility[0, 0].any()


def test_styles_differ_in_appearance_and_pose_distribution():
    src = synthetic_batch(8, "source", torch.Generator().manual_seed(0))
    tgt = synthetic_batch(8, "target", torch.Generator().manual_seed(0))

    # appearance: the target has more high-frequency texture/noise (pixel-difference energy) and is darker
    def roughness(img):
        return (img[..., 1:, :] - img[..., :-1, :]).abs().mean()

    assert roughness(tgt["image"]) > 1.2 * roughness(src["image"])
    assert tgt["image"].mean() < src["image"].mean()
    # pose distribution: both domains show every orientation; the source keeps its own bias (narrower joint
    # ranges, milder pitch, nearer people)
    s_kw, t_kw = DOMAIN_STYLES["source"].scene_kwargs, DOMAIN_STYLES["target"].scene_kwargs
    assert s_kw["yaw_range"] == t_kw["yaw_range"] == (-math.pi, math.pi)
    assert s_kw["pose_range_scale"] < t_kw["pose_range_scale"]
    assert s_kw["pitch_range"][1] < t_kw["pitch_range"][1]
    assert s_kw["depth_range"][1] < t_kw["depth_range"][1]
    depth = src["depth"][src["mask"]]
    assert depth.max() <= s_kw["depth_range"][1] + 1e-3


def test_the_front_shows_a_face_and_a_v_neckline_and_the_back_does_not():
    """The body's front/back cues: a face (not hair) and skin in the V neckline only for a person facing the camera."""
    shirt, skin = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    colours = torch.stack((shirt, torch.tensor([0.0, 0.0, 1.0]), skin, skin, torch.tensor([0.2, 0.2, 0.2]), shirt))
    chest_skin, face_skin = {}, {}
    for yaw in (0.0, math.pi):
        p_r = rotate(_standing(), euler_to_sincos(torch.tensor([yaw, 0.0, 0.0]))).view(1, 1, 15, 3)
        p_g = translate(p_r, torch.tensor([[[112.0, 112.0]]]), torch.tensor([[2500.0]]), K)
        uv = project(p_g, K)
        raster = rasterize_bodies(p_g, uv, torch.ones(1, 1, dtype=torch.bool), colours.view(1, 1, 6, 3),
                                  ambient=torch.ones(1), diffuse=torch.zeros(1))  # fmt: skip
        # the chest: between the shoulders, from the neck to a third of the way down to the pelvis
        (u_r, _), (u_l, _) = uv[0, 0, 3].tolist(), uv[0, 0, 4].tolist()
        v_neck, v_pelvis = uv[0, 0, 1, 1].item(), uv[0, 0, 0, 1].item()
        rows = slice(int(v_neck), int(v_neck + (v_pelvis - v_neck) / 3))
        cols = slice(int(min(u_r, u_l)), int(max(u_r, u_l)) + 1)
        pixels = raster.rgb[0, :, rows, cols].flatten(1).T
        on_body = raster.owner[0, rows, cols].flatten() == 0
        chest_skin[yaw] = int((pixels[on_body] - skin).abs().amax(-1).lt(1e-6).sum())
        assert on_body.all()  # the chest is covered by this person's body in both views
        v_head = uv[0, 0, 2, 1].item()
        face = raster.rgb[0, :, int(v_head) - 10 : int(v_neck + 0.62 * (v_head - v_neck))].flatten(1).T  # upper head
        face_skin[yaw] = int((face - skin).abs().amax(-1).lt(1e-6).sum())
    # yaw 0 faces the camera (test_geometry's convention), yaw pi turns the back to it
    assert chest_skin[0.0] >= 20 and chest_skin[math.pi] == 0, chest_skin
    assert face_skin[0.0] >= 10 and face_skin[math.pi] == 0, face_skin
