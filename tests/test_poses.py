"""Artificial-pose-sampling: ranges, exact bone lengths, mirror symmetry, FK round trip, violations."""

import math

import pytest
import torch

from lightning_mp3d.geometry import forward_kinematics, spherical_to_local, to_local
from lightning_mp3d.skeleton import FLIP_PERM, JOINTS, LIMBS, bone_lengths
from lightning_mp3d.synth import (
    ANGLE_RANGES,
    joint_angle_violation,
    joint_ranges,
    local_angles,
    mirror_poses,
    sample_artificial_poses,
    sample_local_angles,
)
from lightning_mp3d.synth.poses import SAMPLED_JOINTS, range_tensors


def _in_range(angles, scale=1.0, tol=1e-4):
    r = range_tensors(scale)
    theta, gamma = angles.theta.double(), angles.gamma.double()
    rel = torch.remainder(theta - r.theta_lo, 2 * math.pi)
    rel = torch.where(rel > 2 * math.pi - tol, rel - 2 * math.pi, rel)  # theta_lo itself, within rounding
    theta_ok = (rel <= r.theta_hi - r.theta_lo + tol) | r.full_circle
    gamma_ok = (gamma >= r.gamma_lo - tol) & (gamma <= r.gamma_hi + tol)
    return (theta_ok & gamma_ok) | ~r.sampled


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_every_sampled_angle_is_inside_its_range(generator, scale):
    angles = sample_local_angles(20000, generator, range_scale=scale)
    assert _in_range(angles, scale).all()


def test_angles_of_fk_poses_are_inside_their_ranges(generator):
    """The poses FK builds have the sampled angles (T_L recovers them) and zero violation."""
    poses = sample_artificial_poses(5000, generator, dtype=torch.float64)
    assert _in_range(local_angles(poses)).all()
    assert joint_angle_violation(poses).abs().max() < 1e-6


def test_sampled_angles_are_recovered_by_to_local(generator):
    angles = sample_local_angles(2000, generator, dtype=torch.float64)
    p_l = spherical_to_local(angles.theta, angles.gamma)
    p_l[:, 0] = 0.0
    recovered = to_local(forward_kinematics(p_l))
    assert torch.allclose(recovered, p_l, atol=1e-9)


def test_bone_lengths_are_exact(generator):
    poses = sample_artificial_poses(3000, generator, dtype=torch.float64)
    lengths = torch.stack([(poses[:, b] - poses[:, a]).norm(dim=-1) for a, b in LIMBS], -1)
    assert torch.allclose(lengths, bone_lengths(torch.float64)[1:].expand_as(lengths), atol=1e-9)
    assert poses[:, 0].abs().max() == 0


def test_fk_inverts_to_local_on_sampled_poses(generator):
    poses = sample_artificial_poses(3000, generator, dtype=torch.float64)
    torch.testing.assert_close(forward_kinematics(to_local(poses)), poses, atol=1e-4, rtol=0)


def test_ranges_are_left_right_symmetric():
    table = joint_ranges()
    for name in JOINTS:
        if not name.startswith("r_") or name in ("r_hip", "r_shoulder"):
            continue
        right, left = table[name], table["l_" + name[2:]]
        assert left.gamma == right.gamma
        assert left.theta == (-right.theta[1], -right.theta[0])
    assert set(ANGLE_RANGES) == {"neck", "head", "r_shoulder", "r_elbow", "r_wrist", "r_hip", "r_knee", "r_ankle"}
    assert all(r.source for r in ANGLE_RANGES.values())
    assert ANGLE_RANGES["r_hip"].theta[0] == ANGLE_RANGES["r_hip"].theta[1]  # 1 DoF
    assert ANGLE_RANGES["neck"] == ANGLE_RANGES["neck"]._replace(theta=(0.0, 0.0), gamma=(0.0, 0.0))


def test_mirrored_pose_has_mirrored_angles(generator):
    """Reflecting Y and swapping labels maps theta -> -theta, gamma -> gamma, joint j -> FLIP_PERM[j]."""
    poses = sample_artificial_poses(500, generator, dtype=torch.float64)
    a, m = local_angles(poses), local_angles(mirror_poses(poses))
    sampled = [JOINTS.index(n) for n in SAMPLED_JOINTS]
    flip = list(FLIP_PERM)
    assert torch.allclose(m.gamma[:, flip][:, sampled], a.gamma[:, sampled], atol=1e-9)
    dt = torch.remainder(m.theta[:, flip] + a.theta + math.pi, 2 * math.pi) - math.pi
    assert (dt[:, sampled].abs() * a.gamma[:, sampled].sin()).max() < 1e-7
    # mirrored poses are inside the (mirrored) ranges too
    assert joint_angle_violation(mirror_poses(poses)).max() < 1e-6


def test_wrapping_theta_range_is_sampled_through_180(generator):
    ankle = JOINTS.index("r_ankle")
    assert ANGLE_RANGES["r_ankle"].theta[1] < ANGLE_RANGES["r_ankle"].theta[0]  # the table's wrapping entry
    theta = torch.rad2deg(sample_local_angles(20000, generator).theta[:, ankle])
    assert ((theta >= 150 - 1e-3) | (theta <= -150 + 1e-3)).all()
    assert (theta > 170).any() and (theta < -170).any()


def test_violation_measures_degrees_outside(generator):
    """A knee bent 10 degrees past its gamma limit (theta at the centre) violates by 10 degrees."""
    angles = sample_local_angles(4, generator, dtype=torch.float64)
    ankle = JOINTS.index("r_ankle")
    angles.theta[:, ankle] = math.pi
    angles.gamma[:, ankle] = math.radians(145.0)
    p_l = spherical_to_local(angles.theta, angles.gamma)
    v = joint_angle_violation(forward_kinematics(p_l))
    assert torch.allclose(v[:, ankle], torch.full((4,), 10.0, dtype=torch.float64), atol=1e-6)
    others = [j for j in range(15) if j != ankle]
    assert v[:, others].max() < 1e-6


def test_range_scale_narrows_the_distribution(generator):
    wide = sample_artificial_poses(4000, generator, dtype=torch.float64)
    narrow = sample_artificial_poses(4000, generator, dtype=torch.float64, range_scale=0.5)
    assert joint_angle_violation(narrow, range_scale=0.5).max() < 1e-6
    assert (joint_angle_violation(wide, range_scale=0.5).amax(-1) > 1.0).float().mean() > 0.5
    with pytest.raises(ValueError, match="range_scale"):
        sample_artificial_poses(2, range_scale=0.0)


def test_people_stand_upright(generator):
    """Realism: heads above necks, ankles below the pelvis for most poses."""
    poses = sample_artificial_poses(5000, generator)
    assert (poses[:, JOINTS.index("head"), 2] > poses[:, JOINTS.index("neck"), 2]).all()
    ankles = poses[:, [JOINTS.index("r_ankle"), JOINTS.index("l_ankle")], 2]
    assert (ankles < 0).float().mean() > 0.9


def test_seeded_sampling_reproduces():
    a = sample_artificial_poses(10, torch.Generator().manual_seed(3))
    b = sample_artificial_poses(10, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
