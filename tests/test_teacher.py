"""Embedded teacher {E, F}: interface shapes, F(E(I)) == full forward, freezing, load_teacher, the stage-0 loss."""

import pytest
import torch
from torch import nn

from lightning_mp3d.losses.teacher import teacher_loss
from lightning_mp3d.models.teacher import EmbeddedTeacher, Teacher, load_teacher
from lightning_mp3d.skeleton import FLIP_PERM, JOINTS, LIMB_FLIP_PERM
from lightning_mp3d.synth.maps import render_maps


@pytest.fixture
def images(generator):
    return torch.rand(2, 3, 224, 224, generator=generator)


def test_embedded_teacher_shapes_and_v_channels(images):
    teacher = EmbeddedTeacher(width=0.125)
    assert isinstance(teacher, Teacher)
    assert teacher.v_channels == 2 * 64 + 16
    v = teacher.encode(images)
    assert v.shape == (2, teacher.v_channels, 28, 28)
    heatmaps, pafs = teacher.decode(v)
    assert heatmaps.shape == (2, 15, 28, 28) and pafs.shape == (2, 28, 28, 28)
    people = teacher.grouped(images)
    assert people.keypoints.shape == (2, 8, 15, 2) and people.roots_px.shape == (2, 8, 2)
    with pytest.raises(ValueError, match="v must be"):
        teacher.decode(v[:, :-1])
    with pytest.raises(ValueError, match="images must be"):
        teacher.encode(images[:, :, :200])


def test_decode_of_encode_equals_the_full_forward_stage_two(images):
    teacher = EmbeddedTeacher(width=0.25)
    out = teacher.stages(images)
    heatmaps, pafs = teacher.decode(teacher.encode(images))
    assert torch.allclose(heatmaps, out.heatmap2, atol=1e-6) and torch.allclose(pafs, out.paf2, atol=1e-6)


def test_frozen_teacher_gets_no_gradient_but_its_input_does(images):
    teacher = EmbeddedTeacher(width=0.125).freeze()
    parent = nn.ModuleDict({"teacher": teacher, "head": nn.Conv2d(15, 1, 1)})
    parent.train()
    assert teacher.frozen and not teacher.training and not any(m.training for m in teacher.modules())
    x = images.clone().requires_grad_(True)
    heatmaps, pafs = teacher(x)
    (parent["head"](heatmaps).sum() + pafs.sum()).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert parent["head"].weight.grad is not None


def test_normalised_teacher_is_batch_independent_once_frozen(images):
    teacher = EmbeddedTeacher(width=0.125, norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in teacher.modules()) > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in EmbeddedTeacher(width=0.125).modules())
    teacher.train()
    teacher.stages(images)  # a training forward moves the running statistics
    teacher.freeze()
    with torch.no_grad():  # eval-mode BatchNorm: an image's v does not depend on the rest of its batch
        torch.testing.assert_close(teacher.encode(images[:1]), teacher.encode(images)[:1], rtol=1e-5, atol=1e-5)


def _fake_stage0_checkpoint(path, teacher, width):
    state = {f"teacher.{k}": v for k, v in teacher.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"width": width, "peak_threshold": 0.2}}, path)


def test_load_teacher_round_trip_and_clear_errors(tmp_path, images):
    teacher = EmbeddedTeacher(width=0.125)
    _fake_stage0_checkpoint(tmp_path / "last.ckpt", teacher, 0.125)
    loaded = load_teacher(tmp_path / "last.ckpt")
    assert loaded.frozen and loaded.grouping_kwargs["peak_threshold"] == 0.2
    with torch.no_grad():
        assert torch.equal(loaded.encode(images), teacher.encode(images))
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_teacher(tmp_path / "missing.ckpt")
    _fake_stage0_checkpoint(tmp_path / "wrong_width.ckpt", teacher, 0.25)
    with pytest.raises(ValueError, match="width=0.25"):
        load_teacher(tmp_path / "wrong_width.ckpt")
    torch.save(
        {"state_dict": {"aae.w": torch.zeros(1)}, "hyper_parameters": {"embedding_dim": 32}}, tmp_path / "aae.ckpt"
    )
    with pytest.raises(ValueError, match="not a stage-0 TeacherPretraining checkpoint"):
        load_teacher(tmp_path / "aae.ckpt")
    torch.save({"weights": 1}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_teacher(tmp_path / "other.ckpt")


def test_teacher_loss_is_zero_at_the_targets_and_sums_squared_errors():
    joints = torch.tensor([[[[100.0 + 5 * j, 60.0 + 8 * j] for j in range(15)]]])
    targets = render_maps(joints, torch.ones(1, 1, dtype=torch.bool))
    hm, paf = targets[:, :15], targets[:, 15:]
    zero = teacher_loss((hm, hm), (paf, paf), targets)
    assert zero.total == 0
    loss = teacher_loss((hm + 0.1, hm), (paf, paf - 0.2), targets.expand(1, -1, -1, -1))
    assert loss.heatmap == pytest.approx(0.01 * 15 * 28 * 28, rel=1e-5)
    assert loss.paf == pytest.approx(0.04 * 28 * 28 * 28, rel=1e-5)
    assert loss.total == pytest.approx(float(loss.heatmap + loss.paf))
    with pytest.raises(ValueError, match="targets"):
        teacher_loss((hm,), (paf,), targets[:, :40])


def test_side_weight_scales_only_the_left_right_difference_of_the_error():
    joints = torch.tensor([[[[100.0 + 5 * j, 60.0 + 8 * j] for j in range(15)]]])
    targets = render_maps(joints, torch.ones(1, 1, dtype=torch.bool))
    hm, paf = targets[:, :15], targets[:, 15:]
    cells = 28 * 28
    # the same error on both sides: no left/right difference, so the weight changes nothing
    same = teacher_loss((hm + 0.1,), (paf,), targets, side_weight=10.0)
    assert same.heatmap == pytest.approx(0.01 * 15 * cells, rel=1e-5)
    # 0.1 on the right wrist only: half of its square is shared (0.005 per cell), half is the difference (x 10)
    r_wrist = JOINTS.index("r_wrist")
    one_side = hm.clone()
    one_side[:, r_wrist] += 0.1
    loss = teacher_loss((one_side,), (paf,), targets, side_weight=10.0)
    assert loss.heatmap == pytest.approx((0.005 + 10 * 0.005) * cells, rel=1e-5)
    # maps with left and right swapped: the whole error is a left/right difference (PAF limbs swapped too)
    hm_swapped = hm[:, list(FLIP_PERM)]
    paf_swapped = paf.unflatten(1, (-1, 2))[:, list(LIMB_FLIP_PERM)].flatten(1, 2)
    swapped = teacher_loss((hm_swapped,), (paf_swapped,), targets)
    weighted = teacher_loss((hm_swapped,), (paf_swapped,), targets, side_weight=10.0)
    assert swapped.heatmap > 0 and swapped.paf > 0
    torch.testing.assert_close(weighted.heatmap, 10 * swapped.heatmap)
    torch.testing.assert_close(weighted.paf, 10 * swapped.paf)


def test_paf_min_dot_lets_a_teacher_with_short_pafs_group_its_limbs(monkeypatch):
    """One person drawn by hand: exact heatmaps, PAFs along every limb but 0.02 long (a small teacher's are that short).

    With Cao et al.'s 0.05 no limb is supported and nobody is found; with the teacher's ``paf_min_dot`` 0.0 the whole
    person is, every joint where it was drawn.
    """
    xy = {"pelvis": (112, 130), "neck": (112, 70), "head": (112, 38), "r_shoulder": (88, 74), "l_shoulder": (136, 74),
          "r_elbow": (76, 104), "l_elbow": (148, 104), "r_wrist": (70, 136), "l_wrist": (154, 136),
          "r_hip": (96, 134), "l_hip": (128, 134), "r_knee": (94, 172), "l_knee": (130, 172),
          "r_ankle": (92, 208), "l_ankle": (132, 208)}  # fmt: skip
    joints = torch.tensor([[[xy[name] for name in JOINTS]]], dtype=torch.float32)  # (1, 1, 15, 2) pixels
    maps = render_maps(joints, torch.ones(1, 1, dtype=torch.bool))
    short = (maps[:, :15], 0.02 * maps[:, 15:])
    for min_dot, found in ((0.05, 0), (0.0, 1)):
        teacher = EmbeddedTeacher(width=0.125, paf_min_dot=min_dot)
        monkeypatch.setattr(teacher, "decode", lambda v: short)
        people = teacher.group(torch.zeros(1, teacher.v_channels, 28, 28))
        assert int(people.mask.sum()) == found, min_dot
    person = people.keypoints[0][people.mask[0]][0]  # (15, 2)
    assert (people.confidence[0][people.mask[0]][0] > 0).all()
    torch.testing.assert_close(person, joints[0, 0], rtol=0, atol=4.0)  # sub-cell refinement: within half a cell
