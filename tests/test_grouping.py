"""PAF grouping (Cao et al.): peaks, line integrals, greedy matching and assembly on maps from render_maps."""

import itertools

import pytest
import torch

from lightning_mp3d.grouping import (
    find_peaks,
    greedy_match,
    group_people,
    match_people_by_root,
    score_limb_candidates,
)
from lightning_mp3d.skeleton import JOINT_INDEX, NUM_JOINTS
from lightning_mp3d.synth.maps import render_maps

# A standing person facing the camera (pixels, relative to the pelvis; the right side is on the image left).
_TEMPLATE = torch.tensor(
    [
        [0.0, 0.0],  # pelvis
        [0.0, -48.0],  # neck
        [0.0, -78.0],  # head
        [-18.0, -46.0],  # r_shoulder
        [18.0, -46.0],  # l_shoulder
        [-26.0, -20.0],  # r_elbow
        [26.0, -20.0],  # l_elbow
        [-30.0, 6.0],  # r_wrist
        [30.0, 6.0],  # l_wrist
        [-12.0, 2.0],  # r_hip
        [12.0, 2.0],  # l_hip
        [-14.0, 38.0],  # r_knee
        [14.0, 38.0],  # l_knee
        [-15.0, 74.0],  # r_ankle
        [15.0, 74.0],  # l_ankle
    ]
)
GRID_TOL_PX = 5.0  # half a 8-px cell plus the refinement's bias


def _scene(roots: list[tuple[float, float]], scale: list[float] | None = None) -> torch.Tensor:
    scale = scale or [1.0] * len(roots)
    return torch.stack([torch.tensor(r) + s * _TEMPLATE for r, s in zip(roots, scale)])[None]  # (1, P, 15, 2)


def _group(joints: torch.Tensor, mask: torch.Tensor, visibility: torch.Tensor | None = None, **kw):
    maps = render_maps(joints, mask, visibility=visibility)
    return group_people(maps[:, :NUM_JOINTS], maps[:, NUM_JOINTS:], **kw)


def _assert_recovered(people, joints, mask, visibility=None, tol=GRID_TOL_PX):
    """Every GT person has exactly one grouped person whose joints all lie within tol (missing where invisible)."""
    b, p = mask.shape
    vis = mask[..., None].expand(b, p, NUM_JOINTS) if visibility is None else visibility & mask[..., None]
    assert int(people.mask.sum()) == int(mask.sum())
    for bi in range(b):
        preds = people.keypoints[bi][people.mask[bi]]  # (Q, 15, 2)
        conf = people.confidence[bi][people.mask[bi]]
        for pi in torch.nonzero(mask[bi]).flatten().tolist():
            err = (preds - joints[bi, pi]).norm(dim=-1)  # (Q, 15)
            present_ok = (err < tol) | ~vis[bi, pi]
            absent_ok = (conf > 0) == vis[bi, pi]
            hits = (present_ok & absent_ok).all(-1)
            assert int(hits.sum()) == 1, f"person {pi} of image {bi}: errors {err.min(0).values}"


def test_recovers_every_person_from_rendered_maps():
    joints = torch.cat(
        [
            _scene([(50.0, 100.0), (120.0, 130.0), (185.0, 95.0)], [0.8, 1.0, 0.9]),
            _scene([(112.0, 112.0), (40.0, 80.0), (190.0, 140.0)], [1.2, 0.6, 0.7]),
        ]
    )
    mask = torch.tensor([[True, True, True], [True, True, False]])
    people = _group(joints, mask)
    _assert_recovered(people, joints, mask)
    # roots are the pelvis
    for bi in range(2):
        roots = people.roots_px[bi][people.mask[bi]]
        gt = joints[bi, mask[bi], 0]
        assert torch.cdist(gt, roots).min(1).values.max() < GRID_TOL_PX


def test_crossing_people_are_separated():
    a = _TEMPLATE.clone() + torch.tensor([90.0, 110.0])
    b = _TEMPLATE.clone() + torch.tensor([150.0, 118.0])
    # a's left forearm reaches right-down, b's right upper arm goes down across it at (135.6, 84.4)
    a[JOINT_INDEX["l_elbow"]] = torch.tensor([130.0, 80.0])
    a[JOINT_INDEX["l_wrist"]] = torch.tensor([155.0, 100.0])
    b[JOINT_INDEX["r_elbow"]] = torch.tensor([140.0, 100.0])
    b[JOINT_INDEX["r_wrist"]] = torch.tensor([120.0, 115.0])
    seg = lambda p, q, t: p + t * (q - p)  # noqa: E731
    assert (seg(a[6], a[8], 0.2240) - seg(b[3], b[5], 0.4444)).norm() < 0.5  # the segments do cross
    joints = torch.stack((a, b))[None]
    mask = torch.ones(1, 2, dtype=torch.bool)
    _assert_recovered(_group(joints, mask), joints, mask)


def test_missing_joints_are_reported_missing_and_the_rest_recovered():
    joints = _scene([(60.0, 110.0), (160.0, 112.0)])
    mask = torch.ones(1, 2, dtype=torch.bool)
    vis = torch.ones(1, 2, NUM_JOINTS, dtype=torch.bool)
    vis[0, 0, [JOINT_INDEX["l_elbow"], JOINT_INDEX["l_wrist"]]] = False  # a whole sub-chain
    vis[0, 1, JOINT_INDEX["head"]] = False
    vis[0, 1, JOINT_INDEX["r_ankle"]] = False
    people = _group(joints, mask, vis)
    _assert_recovered(people, joints, mask, vis)
    assert (people.keypoints[~(people.confidence > 0)] == 0).all()


def test_person_without_pelvis_or_hips_is_dropped_others_kept():
    joints = _scene([(60.0, 110.0), (160.0, 112.0)])
    mask = torch.ones(1, 2, dtype=torch.bool)
    vis = torch.ones(1, 2, NUM_JOINTS, dtype=torch.bool)
    vis[0, 1, JOINT_INDEX["pelvis"]] = False
    people = _group(joints, mask, vis)
    assert int(people.mask.sum()) == 1
    assert (people.roots_px[0, 0] - joints[0, 0, 0]).norm() < GRID_TOL_PX


def test_empty_maps_give_no_people():
    people = group_people(torch.zeros(2, 15, 28, 28), torch.zeros(2, 28, 28, 28), max_people=5)
    assert people.keypoints.shape == (2, 5, 15, 2) and people.confidence.shape == (2, 5, 15)
    assert people.mask.shape == (2, 5) and people.roots_px.shape == (2, 5, 2)
    assert not people.mask.any() and (people.keypoints == 0).all() and (people.confidence == 0).all()
    weak = torch.full((1, 15, 28, 28), 0.05)  # below the peak threshold everywhere
    assert not group_people(weak, torch.zeros(1, 28, 28, 28)).mask.any()


def test_max_people_keeps_the_strongest():
    joints = _scene([(40.0, 100.0), (112.0, 100.0), (184.0, 100.0)])
    mask = torch.ones(1, 3, dtype=torch.bool)
    vis = torch.ones(1, 3, NUM_JOINTS, dtype=torch.bool)
    vis[0, 1, [JOINT_INDEX["l_wrist"], JOINT_INDEX["r_wrist"], JOINT_INDEX["l_ankle"]]] = False  # fewest joints
    people = _group(joints, mask, vis, max_people=2)
    assert people.mask.all()
    kept_x = sorted(people.roots_px[0, :, 0].tolist())
    assert abs(kept_x[0] - 40.0) < GRID_TOL_PX and abs(kept_x[1] - 184.0) < GRID_TOL_PX


def test_find_peaks_exact_cell_and_subcell_refinement():
    # a Gaussian at (u, v) = (100, 60) px on the 28 grid of a 224 image = (12.5, 7.5) cells
    joints = torch.zeros(1, 1, NUM_JOINTS, 2)
    joints[0, 0, :] = torch.tensor([100.0, 60.0])
    heat = render_maps(joints, torch.ones(1, 1, dtype=torch.bool))[:, :NUM_JOINTS]
    peaks = find_peaks(heat, threshold=0.1, max_peaks=4)
    assert peaks.valid.sum(-1).eq(1).all()
    xy = peaks.xy[0, :, 0] * 8.0
    assert torch.allclose(xy, torch.tensor([100.0, 60.0]).expand(NUM_JOINTS, 2), atol=1.0)
    coarse = find_peaks(heat, threshold=0.1, max_peaks=4, refine=False)
    assert torch.allclose(coarse.xy[0, 0, 0], torch.tensor([12.5, 7.5]))  # the cell holding the point


def test_limb_score_is_the_line_integral():
    paf = torch.zeros(1, 2, 28, 28)
    paf[0, 0] = 1.0  # unit field along +x
    a = torch.tensor([[[5.5, 10.5]]])
    b = torch.tensor([[[15.5, 10.5], [5.5, 20.5], [0.5, 10.5]]])  # along, across, backwards
    s = score_limb_candidates(paf, a, b, torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool))
    assert s[0, 0, 0] == pytest.approx(1.0)  # mean dot 1, distance prior 0 (length 10 < G / 2 = 14)
    assert torch.isinf(s[0, 0, 1]) and torch.isinf(s[0, 0, 2])
    far = score_limb_candidates(
        paf,
        torch.tensor([[[0.5, 1.5]]]),
        torch.tensor([[[27.5, 1.5]]]),
        torch.ones(1, 1, dtype=torch.bool),
        torch.ones(1, 1, dtype=torch.bool),
    )
    assert far[0, 0, 0] == pytest.approx(1.0 + 0.5 * 28 / 27.0 - 1.0)  # Cao's distance prior


def _reference_greedy(score: torch.Tensor) -> list[int]:
    n, m = score.shape
    pairs = sorted(((float(score[i, j]), i, j) for i, j in itertools.product(range(n), range(m))), reverse=True)
    match, used = [-1] * n, set()
    for s, i, j in pairs:
        if s == float("-inf") or match[i] >= 0 or j in used:
            continue
        match[i] = j
        used.add(j)
    return match


def test_greedy_match_equals_sorted_greedy(generator):
    score = torch.rand(20, 5, 7, generator=generator)
    score[torch.rand(20, 5, 7, generator=generator) < 0.3] = float("-inf")
    got = greedy_match(score)
    for bi in range(20):
        assert got[bi].tolist() == _reference_greedy(score[bi])


def test_match_people_by_root_closest_first():
    gt = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]]])
    pred = torch.tensor([[[9.0, 0.0], [1.0, 0.0], [200.0, 200.0]]])
    m = match_people_by_root(pred, torch.ones(1, 3, dtype=torch.bool), gt, torch.ones(1, 3, dtype=torch.bool), 30.0)
    assert m.tolist() == [[1, 0, -1]]


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="heatmaps"):
        group_people(torch.zeros(1, 18, 28, 28), torch.zeros(1, 28, 28, 28))
    with pytest.raises(ValueError, match="pafs"):
        group_people(torch.zeros(1, 15, 28, 28), torch.zeros(1, 38, 28, 28))
