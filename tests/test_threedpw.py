"""3DPW loader (issue 13, item 8) on a fixture in the released layout: sequenceFiles/<split>/<seq>.pkl (latin1
pickles with jointPositions in metres, world frame, cam_poses, cam_intrinsics, campose_valid) and
imageFiles/<seq>/image_%05d.jpg; an oracle scores MPJPE = PA-MPJPE = 0 through the evaluation runner."""

import math
import pickle

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from lightning_mp3d.datamodules.threedpw import SMPL24_TO_OURS, ThreeDPWDataset
from lightning_mp3d.evaluation import evaluate
from tests.helpers import as_the_model_sees_it

K = np.array([[1961.0, 0.0, 540.0], [0.0, 1969.0, 960.0], [0.0, 0.0, 1.0]])  # 1080 x 1920 portrait frames


def _camera(frame: int) -> np.ndarray:
    a = 0.3 + 0.1 * frame
    pose = np.eye(4)
    pose[:3, :3] = [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]]
    pose[:3, 3] = [0.2, -0.1, 1.0]
    return pose


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("3DPW")
    rng = np.random.default_rng(0)
    for name, actors in (("downtown_walking_00", 2), ("outdoors_fencing_01", 1)):
        frames = 2
        joints, truth = [], []
        for a in range(actors):
            cam_frame = rng.normal(0.0, 0.25, (frames, 24, 3)) + [-0.6 + 1.2 * a, 0.1, 4.5 + a]  # metres, camera
            world = np.stack([
                np.linalg.solve(_camera(i)[:3, :3], (cam_frame[i] - _camera(i)[:3, 3]).T).T for i in range(frames)
            ])  # fmt: skip
            joints.append(world.reshape(frames, 72))
            truth.append(cam_frame)
        data = {
            "sequence": name, "jointPositions": joints, "cam_poses": np.stack([_camera(i) for i in range(frames)]),
            "cam_intrinsics": K, "campose_valid": [np.array([1, 1])] + [np.array([1, 0])] * (actors - 1),
            "img_frame_ids": np.arange(frames), "betas": [np.zeros(10)] * actors,
        }  # fmt: skip
        (root / "sequenceFiles" / "test").mkdir(parents=True, exist_ok=True)
        with (root / "sequenceFiles" / "test" / f"{name}.pkl").open("wb") as f:
            pickle.dump(data, f, protocol=2)
        (root / "imageFiles" / name).mkdir(parents=True)
        for i in range(frames):
            Image.new("RGB", (1080, 1920), (100, 100, 100)).save(root / "imageFiles" / name / f"image_{i:05d}.jpg")
        np.save(root / f"{name}_truth.npy", np.stack(truth, 1))  # (N, A, 24, 3) metres, camera frame
    return root


def test_3dpw_items_hold_camera_frame_joints_in_our_order(root):
    ds = ThreeDPWDataset(root)
    assert ds.sequence_names == ["downtown_walking_00", "outdoors_fencing_01"] and len(ds) == 4 and ds.max_people == 2
    item = ds[1]  # downtown_walking_00, frame 1: the second actor is not aligned there
    truth = np.load(root / "downtown_walking_00_truth.npy")[1][:, list(SMPL24_TO_OURS)] * 1000.0
    np.testing.assert_allclose(item["gt_poses"].numpy(), truth, rtol=1e-5, atol=1e-2)
    assert item["gt_mask"].tolist() == [True, False] and item["image"].shape == (3, 224, 224)
    u = K[0, 0] * truth[0, :, 0] / truth[0, :, 2] + K[0, 2]
    np.testing.assert_allclose(item["gt_2d"][0, :, 0].numpy(), u, rtol=1e-5)
    assert item["intrinsics"].tolist() == [1961.0, 1969.0, 540.0, 960.0]
    assert ds[3]["gt_mask"].tolist() == [True, False]  # one actor, padded


def test_3dpw_oracle_scores_zero_error(root):
    batches = list(DataLoader(ThreeDPWDataset(root), batch_size=2))
    lookup = {id(b["image"]): b for b in batches}

    def oracle(images):
        b = lookup[id(images)]
        return as_the_model_sees_it(b), b["gt_2d_input"], b["gt_mask"]

    r = evaluate(oracle, batches, num_sequences=2, sequence_names=["a", "b"])
    assert r.mpjpe.mpjpe.item() < 0.5 and r.pa_mpjpe.mpjpe.item() < 0.5 and r.mpjpe_abs.mpjpe.item() < 0.5
    assert r.pck3d_abs_250.pck_all.item() == 1.0


def test_missing_split_is_named(tmp_path):
    with pytest.raises(ValueError, match="sequenceFiles"):
        ThreeDPWDataset(tmp_path)
