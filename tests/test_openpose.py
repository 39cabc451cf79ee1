"""OpenPose body model in the PyTorch port's layout: strict state-dict loading, shapes, F(E(I)) == stage 2."""

import pytest
import torch

from lightning_mp3d.models.openpose import PoseMachine, load_openpose_state_dict, openpose_key_shapes
from lightning_mp3d.models.teacher import OpenPoseTeacher, coco_to_ours_maps, coco_to_ours_people, normalize_images
from lightning_mp3d.skeleton import JOINT_INDEX


def _port_state_dict(generator, **kw) -> dict[str, torch.Tensor]:
    """Random weights under the flat keys and shapes of the port's body_pose_model.pth (all six stages)."""
    return {k: 0.05 * torch.randn(s, generator=generator) for k, s in openpose_key_shapes(**kw).items()}


def test_port_key_names_and_shapes():
    shapes = openpose_key_shapes()
    assert len(shapes) == 2 * (12 + 2 * 5 + 5 * 2 * 7)  # 12 front convs, 2x5 stage-1, 5 stages x 2 x 7 convs
    assert shapes["conv1_1.weight"] == (64, 3, 3, 3)
    assert shapes["conv4_4_CPM.weight"] == (128, 256, 3, 3)
    assert shapes["conv5_4_CPM_L1.weight"] == (512, 128, 1, 1)
    assert shapes["conv5_5_CPM_L1.weight"] == (38, 512, 1, 1)
    assert shapes["conv5_5_CPM_L2.bias"] == (19,)
    assert shapes["Mconv1_stage2_L1.weight"] == (128, 185, 7, 7)
    assert shapes["Mconv7_stage6_L2.weight"] == (19, 128, 1, 1)
    model_keys = set(PoseMachine().state_dict())
    assert {
        "model0.conv1_1.weight",
        "model1_1.conv5_5_CPM_L1.weight",
        "model2_1.Mconv1_stage2_L1.weight",
        "model2_2.Mconv7_stage2_L2.bias",
    } <= model_keys
    assert not any(k.startswith("model3") for k in model_keys)


def test_loads_port_file_flat_and_prefixed_keys(generator, tmp_path):
    state = _port_state_dict(generator)
    path = tmp_path / "body_pose_model.pth"
    torch.save(state, path)
    model = PoseMachine()
    info = load_openpose_state_dict(model, path)
    assert len(info["discarded"]) == 4 * 2 * 7 * 2  # stages 3-6 are checked and dropped
    assert torch.equal(model.model0.conv1_1.weight, state["conv1_1.weight"])
    assert torch.equal(model.model2_2.Mconv7_stage2_L2.bias, state["Mconv7_stage2_L2.bias"])
    other = PoseMachine()
    load_openpose_state_dict(other, {"module." + k: v for k, v in model.state_dict().items()})
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_wrong_state_dict_is_rejected_clearly(generator, tmp_path):
    state = _port_state_dict(generator)
    model = PoseMachine()
    bad = dict(state)
    del bad["conv3_2.weight"]
    bad["conv9_9.weight"] = torch.zeros(1)
    bad["Mconv1_stage2_L1.weight"] = torch.zeros(128, 186, 7, 7)
    with pytest.raises(ValueError) as err:
        load_openpose_state_dict(model, bad)
    msg = str(err.value)
    assert "missing keys: conv3_2.weight" in msg
    assert "unexpected keys: conv9_9.weight" in msg
    assert "Mconv1_stage2_L1.weight: got (128, 186, 7, 7), expected (128, 185, 7, 7)" in msg
    before = model.model0.conv1_1.weight.clone()
    assert torch.equal(model.model0.conv1_1.weight, before)  # nothing was loaded
    with pytest.raises(ValueError, match="width=0.5"):
        load_openpose_state_dict(PoseMachine(0.5), state)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_openpose_state_dict(model, tmp_path / "nope.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="dict of tensors"):
        load_openpose_state_dict(model, tmp_path / "list.pth")


@pytest.fixture(scope="module")
def openpose_teacher():
    g = torch.Generator().manual_seed(1)
    return OpenPoseTeacher(_port_state_dict(g)).freeze()


def test_openpose_teacher_shapes_and_f_of_e_is_stage_two(openpose_teacher):
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        v = openpose_teacher.encode(images)
        assert v.shape == (1, 1152, 28, 28) and openpose_teacher.v_channels == 1152
        hm_coco, paf_coco = openpose_teacher.decode_coco(v)
        full = openpose_teacher.net(normalize_images(images, bgr=True))
        hm, paf = openpose_teacher.decode(v)
    assert torch.allclose(hm_coco, full.heatmap2, atol=1e-5) and torch.allclose(paf_coco, full.paf2, atol=1e-5)
    assert hm_coco.shape == (1, 19, 28, 28) and paf_coco.shape == (1, 38, 28, 28)
    assert hm.shape == (1, 15, 28, 28) and paf.shape == (1, 28, 28, 28)
    people = openpose_teacher.grouped(images)
    assert people.keypoints.shape == (1, 8, 15, 2) and people.mask.shape == (1, 8)


def test_normalisation_is_the_ports_bgr_over_256():
    img = torch.zeros(1, 3, 224, 224)
    img[:, 0] = 1.0  # pure red
    x = normalize_images(img, bgr=True)
    assert x[0, 2].eq(255 / 256 - 0.5).all() and x[0, 0].eq(-0.5).all()
    with pytest.raises(ValueError, match="images"):
        normalize_images(torch.rand(1, 3, 100, 100))


def test_coco_map_derivations():
    g = torch.arange(28.0)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    sigma = 1.0

    def gauss(x, y):
        return torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))

    hm = torch.zeros(1, 19, 28, 28)
    hm[0, 8], hm[0, 11] = gauss(10, 14), gauss(14, 14)  # r_hip, l_hip
    hm[0, 0] = gauss(12, 5)  # nose only
    pafs = torch.zeros(1, 38, 28, 28)
    pafs[0, 12] = 1.0  # COCO limb 0 = neck -> r_shoulder, x channel
    out_hm, out_paf = coco_to_ours_maps(hm, pafs)
    # geometric mean of two equal-sigma Gaussians: a Gaussian at the midpoint scaled by exp(-d^2 / (8 sigma^2))
    expected = gauss(12, 14) * torch.exp(torch.tensor(-16.0 / 8.0))
    assert torch.allclose(out_hm[0, 0], expected, atol=1e-6)
    assert torch.equal(out_hm[0, JOINT_INDEX["head"]], hm[0, 0])
    assert torch.equal(out_hm[0, JOINT_INDEX["r_hip"]], hm[0, 8])
    assert out_paf[0, 2 * 1].eq(0).all()  # our limb 1 = neck -> head: from neck -> nose (zero here)
    assert out_paf[0, 2 * 2].eq(1).all()  # our limb 2 = neck -> r_shoulder


def test_coco_people_pelvis_and_head_top():
    kp = torch.zeros(18, 2)
    conf = torch.zeros(18)
    kp[1], kp[8], kp[11], kp[0] = (
        torch.tensor([50.0, 40.0]),
        torch.tensor([40.0, 100.0]),
        torch.tensor([60.0, 100.0]),
        torch.tensor([50.0, 20.0]),
    )
    conf[[1, 8, 11, 0]] = torch.tensor([0.9, 0.64, 0.81, 0.5])
    ours, c = coco_to_ours_people(kp, conf)
    assert torch.allclose(ours[0], torch.tensor([50.0, 100.0])) and c[0] == pytest.approx(0.72)
    assert torch.allclose(ours[2], torch.tensor([50.0, 40.0 - 1.4 * 20.0])) and c[2] == pytest.approx(0.5)
    assert c[JOINT_INDEX["l_wrist"]] == 0 and ours[JOINT_INDEX["l_wrist"]].eq(0).all()
