"""Student networks G, H, the fixed scene decoder M and root heatmap targets / NMS."""

import math

import pytest
import torch

from lightning_mp3d.geometry import Intrinsics, project
from lightning_mp3d.models.aae import PoseDecoder
from lightning_mp3d.models.scene_decoder import SceneDecoder, pool_cells
from lightning_mp3d.models.student import (
    DEPTH_CHANNEL,
    PHI_SLICE,
    ROTATION_SLICE,
    SCENE_CHANNELS,
    ChannelwiseFC,
    PoseMapEncoder,
    SceneHead,
)
from lightning_mp3d.roots import find_roots, root_heatmap_targets, unique_root_mask
from lightning_mp3d.skeleton import BONE_LENGTHS, PARENTS


def _decoder(dtype=torch.float32) -> SceneDecoder:
    torch.manual_seed(0)
    return SceneDecoder(PoseDecoder(width=32, depth=2).to(dtype), image_size=224, depth_scale_mm=5000.0)


def test_pose_map_encoder_shapes_and_teacher_range():
    g = PoseMapEncoder(v_channels=24, hidden=8)
    out = g(torch.rand(2, 43, 28, 28) - 0.5)
    assert out.shape == (2, 24, 28, 28)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (7, 7) for m in g.modules()) == 5
    assert out.min() == 0 and out.max() > 0  # v = E(I) is non-negative (ReLU after conv5_4 / conv4_4_CPM): so is v~
    with pytest.raises(ValueError, match="maps must be"):
        g(torch.rand(2, 42, 28, 28))


def test_scene_head_shapes_and_tanh_on_phi_only():
    h = SceneHead(v_channels=24, width=16, fc_channels=8)
    with torch.no_grad():
        h.out.bias.fill_(5.0)  # every pre-activation near 5: only the phi channels may be squashed
    s = h(torch.randn(3, 24, 28, 28))
    assert s.shape == (3, SCENE_CHANNELS, 14, 14)
    assert s[:, PHI_SLICE].abs().max() <= 1.0
    others = torch.cat((s[:, :1], s[:, ROTATION_SLICE], s[:, DEPTH_CHANNEL : DEPTH_CHANNEL + 1]), 1)
    assert others.min() > 2.0  # not squashed
    with pytest.raises(ValueError, match="v must be"):
        h(torch.randn(1, 23, 28, 28))


def test_channelwise_fc_connects_only_within_a_channel():
    fc = ChannelwiseFC(4, 7)
    x = torch.randn(2, 4, 7, 7)
    y = fc(x)
    manual = torch.stack([x[:, c].reshape(2, 49) @ fc.weight[c] + fc.bias[c] for c in range(4)], 1).view(2, 4, 7, 7)
    torch.testing.assert_close(y, manual)
    x2 = x.clone()
    x2[:, 1] += 1.0
    changed = (fc(x2) - y).abs().flatten(2).amax(-1) > 0
    assert changed.tolist() == [[False, True, False, False]] * 2


def test_pool_cells_reads_col_row():
    maps = torch.arange(2 * 3 * 14 * 14, dtype=torch.float32).view(2, 3, 14, 14)
    cells = torch.tensor([[[3, 5]], [[13, 0]]])  # (col, row)
    pooled = pool_cells(maps, cells)
    assert pooled.shape == (2, 1, 3)
    torch.testing.assert_close(pooled[0, 0], maps[0, :, 5, 3])
    torch.testing.assert_close(pooled[1, 0], maps[1, :, 0, 13])


def test_scene_decoder_puts_root_at_pixel_depth_and_keeps_bones():
    m = _decoder()
    s = torch.randn(2, 40, 14, 14)
    s[:, DEPTH_CHANNEL] = 0.0
    s[0, DEPTH_CHANNEL, 2, 7] = math.log(2.0)  # col 7, row 2 -> depth 10000 mm
    cells = torch.tensor([[[7, 2], [1, 1]], [[0, 13], [5, 5]]])
    mask = torch.tensor([[True, True], [True, False]])
    roots_px = torch.tensor([[[120.3, 40.1], [20.0, 20.0]], [[3.0, 220.0], [88.0, 88.0]]])
    scene = m(s, cells, mask, roots_px)
    assert scene.poses.shape == (2, 2, 15, 3) and scene.keypoints.shape == (2, 2, 15, 2)
    torch.testing.assert_close(scene.keypoints[..., 0, :], roots_px, atol=1e-3, rtol=0)
    torch.testing.assert_close(scene.depth[0, 0], torch.tensor(10000.0))
    torch.testing.assert_close(scene.depth[1, 0], torch.tensor(5000.0))
    bones = (scene.canonical[..., 1:, :] - scene.canonical[..., list(PARENTS[1:]), :]).norm(dim=-1)
    torch.testing.assert_close(bones, torch.tensor(BONE_LENGTHS[1:]).expand_as(bones), atol=1e-3, rtol=0)
    torch.testing.assert_close(scene.keypoints, project(scene.poses, Intrinsics.for_image(224)))
    # default root px = cell centre
    centre = m(s, cells, mask).keypoints[0, 0, 0]
    torch.testing.assert_close(centre, torch.tensor([7.5 * 16, 2.5 * 16]), atol=1e-3, rtol=0)
    assert torch.equal(scene.mask, mask)


def test_scene_decoder_gradients_reach_only_pooled_cells_and_not_psi():
    m = _decoder()
    m.train()
    assert not m.pose_decoder.training
    s = torch.randn(1, 40, 14, 14, requires_grad=True)
    scene = m(s, torch.tensor([[[4, 9]]]), torch.tensor([[True]]))
    scene.keypoints.sum().backward()
    grad = s.grad.abs().sum(1)[0]
    assert grad[9, 4] > 0 and grad.sum() == grad[9, 4]
    assert all(p.grad is None and not p.requires_grad for p in m.pose_decoder.parameters())


def test_scene_decoder_gradcheck_float64():
    m = _decoder(torch.float64)
    cells = torch.tensor([[[4, 9], [10, 2]]])
    mask = torch.tensor([[True, True]])
    s0 = torch.randn(1, 40, 14, 14, dtype=torch.float64)

    def f(vec):  # only the pooled vectors matter
        s = s0.clone()
        s[0, :, 9, 4] = vec[:40]
        s[0, :, 2, 10] = vec[40:]
        return m(s, cells, mask).keypoints

    vec = torch.cat((s0[0, :, 9, 4], s0[0, :, 2, 10])).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (vec,), eps=1e-6, atol=1e-4)


def test_root_targets_peak_at_cells_and_find_roots_recovers_them():
    cells = torch.tensor([[[3, 4], [10, 11], [0, 0]], [[7, 7], [0, 0], [0, 0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    t = root_heatmap_targets(cells, mask, 14, sigma=0.75)
    assert t.shape == (2, 14, 14)
    assert t[0, 4, 3] == 1 and t[0, 11, 10] == 1 and t[1, 7, 7] == 1
    assert (t == 1).sum() == 3 and t[0, 0, 0] < 1e-6
    torch.testing.assert_close(t[0, 4, 4], torch.tensor(math.exp(-1 / (2 * 0.75**2))))
    logits = torch.logit(t.clamp(1e-4, 1 - 1e-4))
    det = find_roots(logits, threshold=0.5, max_people=4, image_size=224)
    assert det.cells.shape == (2, 4, 2) and det.mask.sum(1).tolist() == [2, 1]
    found0 = {tuple(c) for c in det.cells[0][det.mask[0]].tolist()}
    assert found0 == {(3, 4), (10, 11)}
    assert det.cells[1, 0].tolist() == [7, 7]
    torch.testing.assert_close(det.roots_px[1, 0], torch.tensor([120.0, 120.0]))
    assert (det.confidence[~det.mask] == 0).all()


def test_find_roots_threshold_and_suppression():
    logits = torch.full((1, 14, 14), -10.0)
    logits[0, 5, 5] = 3.0
    logits[0, 5, 6] = 2.0  # neighbour of a stronger peak: suppressed
    logits[0, 12, 1] = -1.0  # below threshold 0.3
    det = find_roots(logits, threshold=0.3, max_people=3)
    assert det.mask.tolist() == [[True, False, False]]
    assert det.cells[0, 0].tolist() == [5, 5]


def test_find_roots_gives_one_root_per_saturated_plateau():
    logits = torch.full((1, 14, 14), -10.0)
    logits[0, 5:7, 5:7] = 30.0  # sigmoid is exactly 1.0 on the whole 2x2 patch: one person, one root
    det = find_roots(logits, threshold=0.3, max_people=4, subcell=True)
    assert det.mask.tolist() == [[True, False, False, False]]
    assert det.cells[0, 0].tolist() == [5, 5]  # the plateau's first cell in raster order
    torch.testing.assert_close(det.roots_px[0, 0], torch.tensor([6.0 * 16, 6.0 * 16]), atol=0.01, rtol=0)  # centre


def test_unique_root_mask_keeps_best_person_per_cell():
    cells = torch.tensor([[[2, 2], [2, 2], [5, 5], [2, 2]]])
    mask = torch.tensor([[True, True, True, False]])
    score = torch.tensor([[0.2, 0.9, 0.1, 1.0]])
    assert unique_root_mask(cells, mask, score).tolist() == [[False, True, True, False]]
    assert unique_root_mask(cells, mask).tolist() == [[True, False, True, False]]


def test_depth_is_bounded_but_its_gradient_never_dies():
    decoder = SceneDecoder(PoseDecoder(), depth_scale_mm=5000.0, max_log_depth=3.0)
    x = torch.tensor([50.0, -50.0, 0.0, 1.0], requires_grad=True)
    depth = decoder.depth_from_raw(x)
    expected = 5000.0 * torch.exp(torch.tensor([3.0, -3.0, 0.0, 1.0]))
    torch.testing.assert_close(depth.detach(), expected)
    depth.sum().backward()
    assert (x.grad > 0).all()  # a diverged depth can still be pulled back
    torch.testing.assert_close(decoder.raw_from_depth(depth.detach()[2:]), x.detach()[2:])


@pytest.mark.parametrize("readout", [(), (1, 2, 3)])
def test_untrained_student_decodes_upright_frontal_people_at_d0(readout):
    from lightning_mp3d.geometry import sincos_to_matrix
    from lightning_mp3d.models.student import ROOT_PRIOR

    torch.manual_seed(0)
    h = SceneHead(v_channels=24, width=16, fc_channels=8, readout_dilations=readout)
    s = h(torch.rand(3, 24, 28, 28) * 4)
    cells = torch.tensor([[[3, 4], [7, 7], [12, 1]]]).expand(3, 3, 2)
    scene = _decoder()(s, cells, torch.ones(3, 3, dtype=torch.bool))
    angle = torch.rad2deg(torch.acos((sincos_to_matrix(scene.rotation).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2))
    assert angle.max() < 3  # c ~ 0: upright and facing the camera
    assert torch.allclose(scene.depth, torch.full_like(scene.depth, 5000.0), rtol=0.05)
    assert torch.allclose(torch.sigmoid(scene.root_logit), torch.full((3, 3), ROOT_PRIOR), atol=0.005)
    assert scene.phi.abs().max() < 0.1
    head_above_pelvis = scene.poses[..., 2, 1] < scene.poses[..., 0, 1] - 300  # y down: the head is higher
    assert head_above_pelvis.all()


def test_readout_widens_the_root_cells_view():
    def reach(readout):
        torch.manual_seed(0)
        h = SceneHead(v_channels=4, width=8, fc_channels=4, readout_dilations=readout)
        h.channel_fc.weight.data.zero_()  # look only through the convolutions, not the global FC
        torch.nn.init.normal_(h.out.weight)  # the output layer starts at zero (initialise_scene_output)
        v = torch.rand(1, 4, 28, 28, requires_grad=True)
        h(v)[0, 35, 7, 7].backward()
        rows = v.grad[0].abs().sum(0).sum(1).nonzero()
        return int(rows.max() - rows.min())

    assert reach((1, 2, 3)) > reach(()) + 8
