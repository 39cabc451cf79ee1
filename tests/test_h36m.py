"""Human3.6M-style .npz arrays: layout checks, 17-joint mapping, and per-action root-aligned MPJPE (Table 6)."""

import numpy as np
import pytest
import torch

from lightning_mp3d.datamodules.h36m import H36M17_TO_OURS, H36MDataModule, H36MDataset
from lightning_mp3d.evaluation import evaluate
from lightning_mp3d.metrics import MatchSpec


def _write(path, joints=17):
    rng = np.random.default_rng(0)
    n = 8
    p3 = rng.normal(0, 300, (n, joints, 3)) + [0, 0, 5000]
    p2 = 1000 * p3[..., :2] / p3[..., 2:] + 500
    np.savez(
        path,
        poses_3d=p3,
        poses_2d=p2,
        subject=np.array([9, 9, 11, 11, 1, 9, 11, 5]),
        action=np.array([0, 1, 0, 1, 0, 1, 1, 0]),
        action_names=np.array(["Directions", "Walking"]),
        image_size=np.array([1000, 1000]),
    )
    return p3


def test_layout_subjects_and_joint_mapping(tmp_path):
    p3 = _write(tmp_path / "h36m.npz")
    ds = H36MDataset(tmp_path / "h36m.npz")
    assert len(ds) == 6  # S9 and S11 only
    item = ds[0]
    np.testing.assert_allclose(item["gt_poses"][0].numpy(), p3[0][list(H36M17_TO_OURS)], rtol=1e-6)
    assert item["gt_mask"].tolist() == [True] and item["image"].shape == (3, 224, 224)
    np.savez(tmp_path / "bad.npz", poses_3d=p3)
    with pytest.raises(ValueError, match="lacks keys"):
        H36MDataset(tmp_path / "bad.npz")


def test_per_action_root_aligned_mpjpe_by_hand(tmp_path):
    _write(tmp_path / "h36m.npz", joints=15)
    dm = H36MDataModule(str(tmp_path / "h36m.npz"), batch_size=4)
    batches = list(dm.test_dataloader())
    lookup = {id(b["image"]): b for b in batches}
    offsets = {0: 10.0, 1: 30.0}  # per action: every non-root joint off by this many mm along x

    def predictor(images):
        b = lookup[id(images)]
        pred = b["gt_poses"].clone() + 777.0  # a wrong root position does not matter after root alignment
        shift = np.array([offsets[int(a)] for a in b["sequence"]], dtype=np.float32)
        pred[:, :, 1:, 0] += np.asarray(shift)[:, None, None]
        return pred, b["gt_2d_input"], b["gt_mask"]

    names = ["Directions", "Walking"]
    r = evaluate(predictor, batches, num_sequences=2, sequence_names=names, match=MatchSpec("index"))
    per_sequence = torch.tensor([10.0 * 14 / 15, 30.0 * 14 / 15], dtype=r.mpjpe.per_sequence.dtype)
    torch.testing.assert_close(r.mpjpe.per_sequence, per_sequence, rtol=1e-5, atol=1e-12)
    mean = torch.tensor(20.0 * 14 / 15, dtype=r.mpjpe.mean_over_sequences.dtype)
    torch.testing.assert_close(r.mpjpe.mean_over_sequences, mean, rtol=1e-5, atol=1e-12)
