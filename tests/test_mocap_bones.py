"""MoCap bones (issue 13, item 3): D_syn and the AAE normalise a MoCap pose bank through one function, so D_syn's
people have the fixed bone lengths that Ψ and M decode with, and both read the same ``.npz`` format."""

import numpy as np
import torch

from lightning_mp3d.datamodules.dsyn import DSynDataModule, load_pose_bank
from lightning_mp3d.datamodules.poses import load_pose_file
from lightning_mp3d.geometry import sincos_to_matrix
from lightning_mp3d.skeleton import BONE_LENGTHS, PARENTS
from lightning_mp3d.synth import compose_scenes, sample_artificial_poses


def bone_lengths(poses: torch.Tensor) -> torch.Tensor:
    """(..., 15, 3) -> (..., 14) millimetres."""
    return (poses[..., 1:, :] - poses[..., list(PARENTS[1:]), :]).norm(dim=-1)


def mocap_like_bank(n: int = 6) -> torch.Tensor:
    """Poses with other people's bones (each bone scaled by 0.8..1.25), rotated and placed anywhere: (n, 15, 3)."""
    gen = torch.Generator().manual_seed(4)
    p_c = sample_artificial_poses(n, gen, dtype=torch.float64)
    scale = 0.8 + 0.45 * torch.rand(n, 14, 1, generator=gen, dtype=torch.float64)
    bones = (p_c[:, 1:] - p_c[:, list(PARENTS[1:])]) * scale  # (n, 14, 3)
    poses = torch.zeros_like(p_c)
    for j in range(1, 15):  # parents come first in our order
        poses[:, j] = poses[:, PARENTS[j]] + bones[:, j - 1]
    rotation = sincos_to_matrix(torch.randn(n, 6, generator=gen, dtype=torch.float64))
    return poses @ rotation.transpose(-1, -2) + torch.tensor([300.0, -200.0, 4000.0], dtype=torch.float64)


def test_dsyn_and_the_aae_see_the_same_fixed_bone_poses_from_one_npz(tmp_path):
    raw = mocap_like_bank()
    fixed = torch.tensor(BONE_LENGTHS[1:], dtype=torch.float64)
    assert (bone_lengths(raw) - fixed).abs().max() > 50  # the bank's bones are not ours
    path = tmp_path / "mocap.npz"
    np.savez(path, poses=raw.numpy(), joint_order=np.array("ours"))

    aae_poses = load_pose_file(path).double()  # the AAE stage's loader
    torch.testing.assert_close(bone_lengths(aae_poses), fixed.expand(len(raw), -1), atol=1e-2, rtol=0)
    torch.testing.assert_close(load_pose_bank(path).double(), aae_poses)  # D_syn reads the same file alike

    dm = DSynDataModule(batch_size=4, train_batches=1, pose_bank=str(path), min_people=2, max_people=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    people = batch["canonical"][batch["mask"]].double()  # (N, 15, 3)
    torch.testing.assert_close(bone_lengths(people), fixed.expand(len(people), -1), atol=1e-2, rtol=0)
    nearest = (people[:, None] - aae_poses[None]).norm(dim=-1).mean(-1).min(1).values  # each is one of the bank's
    assert nearest.max() < 1e-2


def test_compose_scenes_normalises_a_raw_bank():
    raw = mocap_like_bank().float()
    scenes = compose_scenes(8, generator=torch.Generator().manual_seed(0), poses=raw, max_people=3)
    people = scenes.canonical[scenes.mask]
    fixed = torch.tensor(BONE_LENGTHS[1:])
    torch.testing.assert_close(bone_lengths(people), fixed.expand(len(people), -1), atol=0.05, rtol=0)
