"""Absolute metrics on MuPoTS-3D are scored in the real camera (issue 13, item 1).

The fixture writes two sequences in the real ``annot.mat`` / ``occlusion.mat`` layout whose cameras differ from the
model's 224-px input camera: TS1 2048x2048 with fx != fy and an off-centre principal point (given as a JSON),
TS2 1920x1080 (intrinsics fitted from annot2/annot3). The oracle outputs the ground truth as the model would see it:
root at its pixel in the 224-px input, the root-relative pose unchanged, and the depth at which a person of that
size appears in the f = 224 px input camera.
"""

import json
import math

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from lightning_mp3d.datamodules.mupots import MuPoTSDataModule
from lightning_mp3d.evaluation import evaluate
from lightning_mp3d.geometry import Intrinsics
from lightning_mp3d.geometry.camera import to_real_camera
from lightning_mp3d.skeleton import ROOT
from tests.helpers import as_the_model_sees_it

CAMERAS = {  # TS<n>: (width, height, fx, fy, cx, cy)
    1: (2048, 2048, 1497.0, 1521.0, 1100.0, 960.0),
    2: (1920, 1080, 1405.0, 1390.0, 900.0, 560.0),
}


def _write_sequence(ts_dir, rng, camera, frames=2, people=2):
    w, h, fx, fy, cx, cy = camera
    ts_dir.mkdir(parents=True)
    annotations = np.empty((frames, people), dtype=object)
    occlusion = np.empty((frames, people), dtype=object)
    for i in range(frames):
        for k in range(people):
            a3 = rng.normal(0.0, 200.0, (17, 3))
            a3[14] = 0.0  # MuPoTS pelvis
            a3 += np.array([-800.0 + 1600.0 * k, 150.0, 3500.0 + 1500.0 * k])
            a2 = np.stack((fx * a3[:, 0] / a3[:, 2] + cx, fy * a3[:, 1] / a3[:, 2] + cy), 1)
            annotations[i, k] = {
                "annot2": a2.T,
                "annot3": a3.T,
                "univ_annot3": a3.T,
                "isValidFrame": np.array([[1.0]]),
            }
            occlusion[i, k] = np.zeros((1, 17), dtype=np.uint8)
        Image.new("RGB", (w, h), (90, 90, 90)).save(ts_dir / f"img_{i:06d}.jpg")
    scipy.io.savemat(ts_dir / "annot.mat", {"annotations": annotations})
    scipy.io.savemat(ts_dir / "occlusion.mat", {"occlusion_labels": occlusion})


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("mupots")
    rng = np.random.default_rng(3)
    for n, camera in CAMERAS.items():
        _write_sequence(root / f"TS{n}", rng, camera)
    _, _, fx, fy, cx, cy = CAMERAS[1]
    (root / "cams.json").write_text(json.dumps({"TS1": {"fx": fx, "fy": fy, "cx": cx, "cy": cy}}))
    return list(MuPoTSDataModule(str(root), intrinsics_json=str(root / "cams.json"), batch_size=3).test_dataloader())


def test_oracle_in_the_input_camera_scores_perfect_absolute_metrics(batches):
    lookup = {id(b["image"]): b for b in batches}

    def oracle(images):  # people listed in reverse order, with confidences
        b = lookup[id(images)]
        conf = torch.linspace(0.9, 0.5, b["gt_mask"].shape[1]).expand_as(b["gt_mask"])
        return as_the_model_sees_it(b).flip(1), b["gt_2d_input"].flip(1), b["gt_mask"].flip(1), conf

    assert {tuple(b["image_size"][0].tolist()) for b in batches} == {(2048.0, 2048.0), (1920.0, 1080.0)}
    virtual_depth = as_the_model_sees_it(batches[0])[..., ROOT, 2]
    assert (virtual_depth - batches[0]["gt_poses"][..., ROOT, 2]).abs().min() > 500  # the two cameras differ
    r = evaluate(oracle, batches, num_sequences=20)
    assert r.pck3d_abs_250.pck_all.item() == 1.0
    assert r.pck3d_abs_150.pck_all.item() == 1.0
    assert r.ap_root.item() == pytest.approx(1.0)
    assert r.mpjpe_abs.mpjpe.item() < 0.5  # mm (float32 round trip of ~4 m coordinates)
    assert r.pck3d_rel.pck_all.item() == 1.0 and r.mpjpe.mpjpe.item() < 0.5


def test_to_real_camera_places_the_root_on_its_pixel_through_the_real_intrinsics():
    virtual = Intrinsics.for_image(224)
    poses = torch.tensor([[[[30.0, -40.0, 3000.0], [60.0, -500.0, 3050.0]]]])  # (1, P=1, J=2, 3)
    letterbox = torch.tensor([[0.1, 2.0, 58.0]])  # input = 0.1 * original + (2, 58)
    fx, fy, cx, cy = 1500.0, 1460.0, 1000.0, 500.0
    real = to_real_camera(poses, letterbox, torch.tensor([[fx, fy, cx, cy]]), virtual)
    u_in = virtual.focal * 30.0 / 3000.0 + 112.0
    v_in = virtual.focal * -40.0 / 3000.0 + 112.0
    u, v = (u_in - 2.0) / 0.1, (v_in - 58.0) / 0.1
    z = 3000.0 * 0.1 * math.sqrt(fx * fy) / 224.0
    expected_root = torch.tensor([(u - cx) * z / fx, (v - cy) * z / fy, z])
    torch.testing.assert_close(real[0, 0, 0], expected_root, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(real[0, 0, 1] - real[0, 0, 0], poses[0, 0, 1] - poses[0, 0, 0])


def test_predict_with_intrinsics_puts_each_root_on_its_original_pixel_through_the_real_camera():
    from lightning_mp3d.geometry import project
    from lightning_mp3d.imageio import Letterbox
    from lightning_mp3d.inference import Prediction
    from lightning_mp3d.predict import in_real_camera, people_json

    virtual = Intrinsics.for_image(224)
    gen = torch.Generator().manual_seed(0)
    poses = torch.randn(2, 3, 15, 3, generator=gen) * 200 + torch.tensor([0.0, 0.0, 4000.0])  # (B, K, J, 3)
    keypoints = project(poses, virtual)
    mask = torch.ones(2, 3, dtype=torch.bool)
    prediction = Prediction(poses, keypoints, torch.full((2, 3), 0.9), mask, keypoints[..., 0, :])
    letterboxes = torch.tensor([[0.25, 0.0, 75.0], [0.4, -16.0, 0.0]])  # input = s * original + o
    camera = Intrinsics(1450.0, 1500.0, 470.0, 330.0)
    real = prediction._replace(poses=in_real_camera(poses, letterboxes, camera, 224))
    for i in range(2):
        record = people_json(real, i, letterboxes[i], 224, camera)
        assert record["camera"] == camera._asdict()
        for k, person in enumerate(record["people"]):
            root = torch.tensor(person["joints_3d_mm"][0], dtype=torch.float64)
            uv = (camera.fx * root[0] / root[2] + camera.cx, camera.fy * root[1] / root[2] + camera.cy)
            expected = Letterbox.from_tensor(letterboxes[i].double()).to_original(keypoints[i, k, :1].double())[0]
            torch.testing.assert_close(torch.tensor(uv, dtype=torch.float64), expected, atol=0.05, rtol=0)
            s_in = float(letterboxes[i, 0])
            expected_z = float(poses[i, k, 0, 2]) * s_in * math.sqrt(camera.fx * camera.fy) / 224.0
            assert root[2].item() == pytest.approx(expected_z, abs=0.1)


def test_from_real_camera_inverts_to_real_camera():
    from lightning_mp3d.geometry.camera import from_real_camera

    gen = torch.Generator().manual_seed(1)
    virtual = Intrinsics.for_image(224)
    real = torch.randn(2, 3, 15, 3, generator=gen, dtype=torch.float64) * 300 + torch.tensor([200.0, 100.0, 4500.0])
    letterbox = torch.tensor([[224 / 2048, 0.0, 0.0], [224 / 1920, 0.0, 49.0]], dtype=torch.float64)
    intrinsics = torch.tensor([[1497.0, 1521.0, 1100.0, 960.0], [1405.0, 1390.0, 900.0, 560.0]], dtype=torch.float64)
    seen_by_model = from_real_camera(real, letterbox, intrinsics, virtual)
    torch.testing.assert_close(to_real_camera(seen_by_model, letterbox, intrinsics, virtual), real)
    gt = {"gt_poses": real, "letterbox": letterbox, "intrinsics": intrinsics}
    fx, fy, cx, cy = intrinsics[:, None, None].unbind(-1)
    pixels = torch.stack((fx * real[..., 0] / real[..., 2] + cx, fy * real[..., 1] / real[..., 2] + cy), -1)
    gt["gt_2d_input"] = pixels * letterbox[:, None, None, :1] + letterbox[:, None, None, 1:]
    torch.testing.assert_close(seen_by_model, as_the_model_sees_it(gt))  # the oracle's independent construction
