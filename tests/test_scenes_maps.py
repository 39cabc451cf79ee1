"""D_syn scenes (shapes, frustum, distinct root cells, projection) and m_syn maps (peaks, PAFs, flips)."""

import math

import pytest
import torch

from lightning_mp3d.geometry import Intrinsics, grid_to_pixel, pixel_to_grid, project, rotate, translate
from lightning_mp3d.skeleton import FLIP_PERM, LIMBS
from lightning_mp3d.synth import MAP_CHANNELS, Scenes, compose_scenes, flip_maps, render_maps
from lightning_mp3d.synth.scenes import check_root_cells, sample_root_pixels


@pytest.fixture
def scenes(generator) -> Scenes:
    return compose_scenes(400, generator=generator)


def test_scene_shapes_and_padding(scenes):
    b, p = 400, 4
    shapes = {
        "poses": (b, p, 15, 3),
        "canonical": (b, p, 15, 3),
        "rotation": (b, p, 6),
        "roots_px": (b, p, 2),
        "depth": (b, p),
        "joints_2d": (b, p, 15, 2),
        "root_cells": (b, p, 2),
        "mask": (b, p),
    }
    assert {k: tuple(v.shape) for k, v in scenes._asdict().items()} == shapes
    assert scenes.root_cells.dtype == torch.long and scenes.mask.dtype == torch.bool
    counts = scenes.mask.sum(1)
    assert counts.min() == 1 and counts.max() == 4
    assert (scenes.mask[:, :-1] | ~scenes.mask[:, 1:]).all()  # valid rows first
    pad = ~scenes.mask
    assert scenes.poses[pad].abs().max() == 0 and scenes.depth[pad].abs().max() == 0


def test_roots_project_to_their_pixels(scenes):
    k = Intrinsics.for_image(224)
    m = scenes.mask
    assert torch.allclose(project(scenes.poses, k)[:, :, 0][m], scenes.roots_px[m], atol=1e-3)
    assert torch.allclose(project(scenes.poses, k)[m], scenes.joints_2d[m])
    rebuilt = translate(rotate(scenes.canonical, scenes.rotation), scenes.roots_px, scenes.depth, k)
    assert torch.allclose(rebuilt[m], scenes.poses[m], atol=1e-2)


def test_roots_lie_in_the_frustum(scenes):
    m = scenes.mask
    assert (scenes.depth[m] >= 3000).all() and (scenes.depth[m] <= 8000).all()
    assert (scenes.roots_px[m] >= 16).all() and (scenes.roots_px[m] <= 208).all()


def test_root_cells_are_distinct_and_match_pixels(scenes):
    assert check_root_cells(scenes.root_cells, scenes.mask, 14).all()
    m = scenes.mask
    assert torch.equal(pixel_to_grid(scenes.roots_px, 14, 224)[m], scenes.root_cells[m])


def test_distinct_cells_even_when_crowded(generator):
    """A margin that leaves only 4 usable cells still gives 4 distinct cells per scene."""
    roots, cells = sample_root_pixels(300, 4, generator=generator, margin_px=96.0)
    assert check_root_cells(cells, torch.ones(300, 4, dtype=torch.bool), 14).all()
    assert torch.equal(pixel_to_grid(roots, 14, 224), cells)
    with pytest.raises(ValueError, match="usable cells"):
        sample_root_pixels(2, 4, margin_px=112.0)


def test_check_root_cells_detects_a_clash():
    cells = torch.tensor([[[3, 4], [3, 4]], [[3, 4], [3, 4]]])
    mask = torch.tensor([[True, True], [True, False]])
    assert check_root_cells(cells, mask, 14).tolist() == [False, True]


def test_pose_bank_is_used_and_checked(generator):
    bank = compose_scenes(1, generator=generator, min_people=1, max_people=1).canonical[0]  # (1, 15, 3)
    scenes = compose_scenes(5, generator=generator, poses=bank, max_people=2)
    m = scenes.mask
    assert torch.allclose(scenes.canonical[m], bank.expand(int(m.sum()), -1, -1), atol=1e-3)
    with pytest.raises(ValueError, match=r"\(3, 14, 3\)"):
        compose_scenes(2, poses=torch.zeros(3, 14, 3))


@pytest.mark.parametrize(("lo", "hi", "bad"), [(0, 2, "0"), (1, 5, "5"), (3, 2, "3")])
def test_people_count_outside_range_is_refused(lo, hi, bad):
    with pytest.raises(ValueError, match=bad):
        compose_scenes(2, min_people=lo, max_people=hi)


def test_seeded_scenes_reproduce():
    a = compose_scenes(8, generator=torch.Generator().manual_seed(5))
    b = compose_scenes(8, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def _one_person(joints):
    return joints[None, None], torch.ones(1, 1, dtype=torch.bool)


def test_heatmap_peaks_at_projected_joints(generator):
    """A joint at a cell centre gives 1 there, the Gaussian value next to it; the argmax is the nearest cell."""
    cells = torch.randint(0, 28, (15, 2), generator=generator)
    joints = grid_to_pixel(cells, 28, 224)
    maps = render_maps(*_one_person(joints))
    assert maps.shape == (1, MAP_CHANNELS, 28, 28)
    heat = maps[0, :15]
    flat = heat.flatten(1).argmax(1)
    assert torch.equal(torch.stack((flat % 28, flat // 28), -1), cells)
    assert torch.allclose(heat.flatten(1).amax(1), torch.ones(15))
    scenes = compose_scenes(6, generator=generator)
    heat = render_maps(scenes.joints_2d, scenes.mask)[:, :15]
    inside = ((scenes.joints_2d >= 0) & (scenes.joints_2d < 224)).all(-1) & scenes.mask[..., None]
    cell = pixel_to_grid(scenes.joints_2d, 28, 224)
    b, p, j = torch.nonzero(inside, as_tuple=True)
    at = heat[b, j, cell[b, p, j, 1], cell[b, p, j, 0]]
    assert (at > math.exp(-(4**2 + 4**2) / (2 * 7.0**2)) - 1e-6).all()  # within half a cell of the peak


def test_heatmap_value_is_the_gaussian():
    joints = torch.zeros(15, 2) + torch.tensor([100.0, 60.0])
    heat = render_maps(*_one_person(joints), sigma_px=5.0)[0, 0]
    centre = grid_to_pixel(torch.tensor([3, 9]), 28, 224)  # (col 3, row 9)
    expected = math.exp(-((centre - torch.tensor([100.0, 60.0])) ** 2).sum().item() / 50.0)
    assert heat[9, 3].item() == pytest.approx(expected, rel=1e-5)


def test_paf_is_unit_on_the_limb_and_zero_far_from_it():
    """Horizontal limb k at row 10: unit (1, 0) along its cells, zero 3 cells away and beyond its ends."""
    joints = torch.full((15, 2), 500.0)  # everything far outside the grid ...
    k = 4  # limb 4 = (r_shoulder 3, r_elbow 5)
    a, b = LIMBS[k]
    y = grid_to_pixel(torch.tensor([0, 10]), 28, 224)[1]
    joints[a] = torch.tensor([44.0, y])
    joints[b] = torch.tensor([180.0, y])
    maps = render_maps(*_one_person(joints))[0]
    paf_x, paf_y = maps[15 + 2 * k], maps[16 + 2 * k]
    cols = torch.arange(28)
    centres_u = grid_to_pixel(torch.stack((cols, torch.zeros_like(cols)), -1), 28, 224)[:, 0]
    on = (centres_u >= 44) & (centres_u <= 180)
    assert torch.allclose(paf_x[10, on], torch.ones(int(on.sum())))
    assert paf_y[10].abs().max() == 0
    assert paf_x[10, ~on].abs().max() == 0
    assert torch.allclose(paf_x[9, on], torch.ones(int(on.sum())))  # 8 px away: inside the width
    for far in (paf_x[13:], paf_x[:8], paf_y):  # 3+ cells (>= 24 px) from the axis
        assert far.abs().max() == 0
    norm = maps[15:].unflatten(0, (14, 2)).norm(dim=1)
    assert ((norm - 1).abs() < 1e-5)[norm > 0].all()


def test_paf_averages_overlapping_people():
    """Two people with opposite vertical limbs over the same cells give zero; equal limbs give the unit vector."""
    joints = torch.full((2, 15, 2), 500.0)
    k = 4
    a, b = LIMBS[k]
    joints[0, a], joints[0, b] = torch.tensor([100.0, 40.0]), torch.tensor([100.0, 180.0])
    joints[1, a], joints[1, b] = torch.tensor([100.0, 180.0]), torch.tensor([100.0, 40.0])
    maps = render_maps(joints[None], torch.ones(1, 2, dtype=torch.bool))[0]
    assert maps[15 + 2 * k : 17 + 2 * k].abs().max() < 1e-6
    maps = render_maps(joints[None], torch.tensor([[True, False]]))[0]
    assert maps[16 + 2 * k].max() == pytest.approx(1.0)


def test_masked_people_and_invisible_joints_leave_no_trace(generator):
    scenes = compose_scenes(4, generator=generator, min_people=2, max_people=2)
    full = render_maps(scenes.joints_2d, scenes.mask)
    only_first = render_maps(scenes.joints_2d[:, :1], scenes.mask[:, :1])
    masked = render_maps(scenes.joints_2d, torch.tensor([[True, False]]).expand(4, 2))
    assert torch.equal(masked, only_first) and not torch.equal(full, only_first)
    vis = torch.ones(4, 2, 15, dtype=torch.bool)
    vis[:, :, 2] = False  # heads invisible
    maps = render_maps(scenes.joints_2d, scenes.mask, visibility=vis)
    assert maps[:, 2].abs().max() == 0 and maps[:, 15 + 2 * 1 : 17 + 2 * 1].abs().max() == 0  # limb 1 ends at head


def test_flip_maps_matches_rendering_flipped_joints(generator):
    scenes = compose_scenes(16, generator=generator)
    maps = render_maps(scenes.joints_2d, scenes.mask)
    flipped = scenes.joints_2d[:, :, list(FLIP_PERM)].clone()
    flipped[..., 0] = 224 - flipped[..., 0]
    assert torch.allclose(flip_maps(maps), render_maps(flipped, scenes.mask), atol=1e-4)
    assert torch.equal(flip_maps(flip_maps(maps)), maps)


def test_render_maps_checks_shapes():
    with pytest.raises(ValueError, match="joints_2d"):
        render_maps(torch.zeros(1, 2, 14, 2), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        render_maps(torch.zeros(1, 2, 15, 2), torch.ones(1, 3, dtype=torch.bool))
