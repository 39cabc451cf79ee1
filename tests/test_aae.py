"""AAE networks, losses, checkpoint loading errors and the pose datamodule (pure tensor parts, no Trainer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_mp3d.datamodules import streams
from lightning_mp3d.datamodules.poses import ArtificialPoseBatches, PoseDataModule, load_pose_file
from lightning_mp3d.geometry.pose import forward_kinematics, to_local
from lightning_mp3d.geometry.rigid import euler_to_sincos, sincos_to_matrix
from lightning_mp3d.losses.aae import cycle_loss, discriminator_loss, generator_loss, joint_limit_loss
from lightning_mp3d.models.aae import (
    FREE_JOINTS,
    PoseDecoder,
    PoseDiscriminator,
    PoseEncoder,
    complete_local_pose,
    load_pose_decoder,
)
from lightning_mp3d.skeleton import BONE_LENGTHS, MUPOTS17_TO_OURS, PARENTS
from lightning_mp3d.synth.poses import (
    joint_angle_violation,
    sample_artificial_poses,
    smooth_joint_angle_violation,
    smooth_local_angle_violation,
)


def _prior(n: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def test_decoded_poses_have_exact_bone_lengths_after_fk():
    torch.manual_seed(0)
    p_c = forward_kinematics(PoseDecoder(width=32, depth=1).double()(_prior(64, dtype=torch.float64)))
    bones = (p_c[:, 1:] - p_c[:, list(PARENTS[1:])]).norm(dim=-1)
    torch.testing.assert_close(bones, torch.tensor(BONE_LENGTHS[1:], dtype=torch.float64).expand_as(bones))


def test_decoder_output_is_the_local_pose_of_its_own_fk():
    """Ψ completes the 0-DoF rows exactly as FK reads them: T_L(FK(Ψ(phi))) == Ψ(phi), rows are unit or zero."""
    torch.manual_seed(1)
    p_l = PoseDecoder(width=32, depth=1).double()(_prior(64, dtype=torch.float64))
    torch.testing.assert_close(to_local(forward_kinematics(p_l)), p_l)
    norms = p_l.norm(dim=-1)
    torch.testing.assert_close(norms[:, 1:], torch.ones_like(norms[:, 1:]))
    assert torch.all(norms[:, 0] == 0)


def test_encoder_maps_into_open_cube_and_checks_shapes():
    torch.manual_seed(2)
    p_l = to_local(sample_artificial_poses(16, torch.Generator().manual_seed(0)))
    phi = PoseEncoder(width=32, depth=1)(p_l)
    assert phi.shape == (16, 32) and phi.abs().max() < 1
    assert PoseDiscriminator(width=16, depth=1)(p_l).shape == (16,)
    with pytest.raises(ValueError, match="p_l must be"):
        PoseEncoder()(torch.zeros(4, 17, 3))
    with pytest.raises(ValueError, match="phi must be"):
        PoseDecoder()(torch.zeros(4, 16))


def test_encoder_reads_only_joints_with_degrees_of_freedom():
    """Changing the neck / left hip / left shoulder rows (which FK ignores) does not change phi."""
    torch.manual_seed(3)
    p_l = to_local(sample_artificial_poses(4, torch.Generator().manual_seed(1)))
    other = p_l.clone()
    other[:, [0, 1, 4, 10]] = torch.randn(4, 4, 3)
    encoder = PoseEncoder(width=16, depth=1)
    torch.testing.assert_close(encoder(p_l), encoder(other))
    assert len(FREE_JOINTS) == 11 and not {0, 1, 4, 10} & set(FREE_JOINTS)


def test_cycle_loss_hand_computed():
    p_c = torch.zeros(2, 15, 3)
    p_hat = torch.zeros(2, 15, 3)
    p_hat[0, 3, 0] = 90.0  # one coordinate off by 90 mm: mean abs = 90 / 90 = 1 mm
    phi = torch.zeros(2, 4)
    phi_hat = torch.tensor([[0.4, 0.0, 0.0, 0.0], [0.0, 0.0, -0.4, 0.0]])  # mean abs 0.1
    loss = cycle_loss(p_c, p_hat, phi, phi_hat, pose_unit_mm=100.0)
    assert loss.pose_mm.item() == pytest.approx(1.0)
    assert loss.phi.item() == pytest.approx(0.1)
    assert loss.total.item() == pytest.approx(0.01 + 0.1)
    with pytest.raises(ValueError, match="pose_unit_mm"):
        cycle_loss(p_c, p_hat, phi, phi_hat, pose_unit_mm=0.0)
    with pytest.raises(ValueError, match="phi_hat"):
        cycle_loss(p_c, p_hat, phi, phi_hat[:, :2])


def test_adversarial_losses_hand_computed():
    zeros = torch.zeros(5)
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(math.log(2))
    assert generator_loss(zeros).item() == pytest.approx(math.log(2))
    big = torch.full((5,), 30.0)
    assert discriminator_loss(big, -big).item() < 1e-10  # a perfect discriminator
    assert generator_loss(-big).item() == pytest.approx(30.0, rel=1e-6)  # non-saturating: large when fooled badly


def test_few_steps_lower_cycle_loss_on_fixed_batch():
    torch.manual_seed(4)
    encoder, decoder = PoseEncoder(width=64, depth=2), PoseDecoder(width=64, depth=2)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    p_c = sample_artificial_poses(32, torch.Generator().manual_seed(2))
    p_l, phi = to_local(p_c), _prior(32, seed=3)

    def loss() -> torch.Tensor:
        return cycle_loss(p_c, forward_kinematics(decoder(encoder(p_l))), phi, encoder(decoder(phi))).total

    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first


def test_load_pose_decoder_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="AAE checkpoint not found"):
        load_pose_decoder(tmp_path / "nope.ckpt")
    foreign = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {"encoder.w": torch.zeros(1)}, "hyper_parameters": {}}, foreign)
    with pytest.raises(ValueError, match="not an AAE stage checkpoint"):
        load_pose_decoder(foreign)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_pose_decoder(garbage)


def _to_mupots17(p: torch.Tensor) -> torch.Tensor:
    """Our 15 joints -> MuPoTS 17-joint order (spine and head centre filled with plausible points)."""
    out = torch.zeros(p.shape[0], 17, 3, dtype=p.dtype)
    out[:, list(MUPOTS17_TO_OURS)] = p
    out[:, 15] = 0.5 * (p[:, 0] + p[:, 1])
    out[:, 16] = 0.5 * (p[:, 1] + p[:, 2])
    return out


@pytest.mark.parametrize("order", ["ours", "mupots17"])
def test_pose_file_is_converted_to_canonical_poses_with_fixed_bones(tmp_path, order):
    """A rotated, translated pose file with our bone lengths gives back the canonical poses exactly;
    other bone lengths are replaced by the skeleton's."""
    p_c = sample_artificial_poses(8, torch.Generator().manual_seed(5), dtype=torch.float64)
    rotation = sincos_to_matrix(euler_to_sincos(torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)))
    world = p_c @ rotation.mT + torch.tensor([100.0, -2000.0, 4000.0], dtype=torch.float64)
    world[4] *= 1.1  # a taller person: same angles, other bone lengths
    data = world if order == "ours" else _to_mupots17(world)
    path = tmp_path / "poses.npz"
    np.savez(path, poses=data.numpy(), joint_order=np.array(order))
    loaded = load_pose_file(path)
    assert loaded.dtype == torch.float32 and loaded.shape == (8, 15, 3)
    torch.testing.assert_close(loaded.double(), p_c, atol=1e-3, rtol=0)
    np.savez(path, poses=data.numpy())  # joint order inferred from J
    torch.testing.assert_close(load_pose_file(path).double(), p_c, atol=1e-3, rtol=0)


def test_pose_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, joints=np.zeros((4, 15, 3)))
    with pytest.raises(ValueError, match="no 'poses' array"):
        load_pose_file(path)
    np.savez(path, poses=np.zeros((4, 16, 3)))
    with pytest.raises(ValueError, match="15 or 17"):
        load_pose_file(path)
    np.savez(path, poses=np.zeros((4, 15, 3)))
    with pytest.raises(ValueError, match="'mupots17' order must be"):
        load_pose_file(path, joint_order="mupots17")
    with pytest.raises(ValueError, match="joint_order"):
        PoseDataModule(joint_order="coco")


def test_pose_file_datamodule_holds_out_a_disjoint_validation_split(tmp_path):
    p_c = sample_artificial_poses(50, torch.Generator().manual_seed(6))
    path = tmp_path / "poses.npz"
    np.savez(path, poses=p_c.numpy())
    dm = PoseDataModule(path=str(path), batch_size=8, val_fraction=0.2, val_batch_size=4)
    dm.setup("fit")
    train = torch.cat(list(dm.train_dataloader()))
    val = torch.cat(list(dm.val_dataloader()))
    assert val.shape == (10, 15, 3) and train.shape == (40, 15, 3)
    assert torch.cdist(train.flatten(1), val.flatten(1)).min() > 1.0  # no pose in both


def test_artificial_batches_differ_between_ranks_and_are_reproducible(monkeypatch):
    dataset = ArtificialPoseBatches(batch_size=4, batches=3, seed=0)

    def batches(rank: int) -> torch.Tensor:
        monkeypatch.setattr(streams, "distributed_rank", lambda: rank)
        torch.manual_seed(rank)  # the global RNG plays no part
        return torch.stack(list(dataset))

    rank0, rank1 = batches(0), batches(1)
    assert rank0.shape == (3, 4, 15, 3)
    torch.testing.assert_close(batches(0), rank0)
    assert not torch.allclose(rank0, rank1)
    assert not torch.allclose(rank0[0], rank0[1])  # batches within an epoch differ
    dataset.set_epoch(1)
    assert not torch.allclose(torch.stack(list(dataset)), rank0)  # and epochs differ


def test_limit_loss_is_zero_inside_ranges_and_positive_with_finite_float64_gradients_outside():
    inside = sample_artificial_poses(256, torch.Generator().manual_seed(8), dtype=torch.float64)
    assert torch.all(smooth_joint_angle_violation(inside) == 0)
    assert joint_limit_loss(to_local(inside)).item() == 0.0
    narrower = sample_artificial_poses(256, torch.Generator().manual_seed(9), dtype=torch.float64, range_scale=0.8)
    assert joint_limit_loss(to_local(narrower), margin=math.radians(2.0)).item() == 0.0  # inside the shrunk ranges
    # Random directions (mostly outside), plus the degenerate poles e1 = +-x where acos and atan2 are singular.
    free = torch.randn(64, len(FREE_JOINTS), 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    free[0] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    free[1] = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)
    p_l = torch.zeros(64, 15, 3, dtype=torch.float64)
    p_l[:, list(FREE_JOINTS)] = free
    p_l.requires_grad_(True)
    loss = joint_limit_loss(p_l, margin=math.radians(2.0))
    assert loss.item() > 0
    (grad,) = torch.autograd.grad(loss, p_l)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.autograd.gradcheck(
        lambda x: smooth_local_angle_violation(x, delta=0.1), (p_l[2:6].detach().clone().requires_grad_(True),)
    )


def test_gradient_steps_on_limit_loss_lower_the_exact_violation():
    free = torch.randn(128, len(FREE_JOINTS), 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    free.requires_grad_(True)
    opt = torch.optim.Adam([free], lr=0.05)

    def violation() -> torch.Tensor:  # exact check, degrees, of FK of the completed local pose
        return joint_angle_violation(forward_kinematics(complete_local_pose(free.detach()))).mean()

    first = violation().item()
    for _ in range(100):
        opt.zero_grad()
        joint_limit_loss(complete_local_pose(free), margin=math.radians(2.0)).backward()
        opt.step()
    assert first > 5.0 and violation().item() < 0.2 * first


def test_bounded_decoder_decodes_every_phi_inside_the_ranges():
    torch.manual_seed(12)
    decoder = PoseDecoder(width=32, depth=1, range_scale=1.0)
    for layer in decoder.modules():  # large weights: saturated sigmoids, the range ends
        if isinstance(layer, torch.nn.Linear):
            layer.weight.data.mul_(20.0)
    p_c = forward_kinematics(decoder(_prior(2048, seed=13)))
    assert torch.all(joint_angle_violation(p_c) == 0)
    bones = (p_c[:, 1:] - p_c[:, list(PARENTS[1:])]).norm(dim=-1)
    torch.testing.assert_close(bones, torch.tensor(BONE_LENGTHS[1:]).expand_as(bones))
    phi = _prior(8, seed=14).requires_grad_(True)
    decoder(phi).sum().backward()
    assert torch.isfinite(phi.grad).all()
