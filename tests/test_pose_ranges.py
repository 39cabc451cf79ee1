"""Artificial pose ranges (issue 13, item 5): the values suppl. 3 states are used as stated; every other range
names its source."""

import pytest
import torch

from lightning_mp3d.skeleton import joint_index
from lightning_mp3d.synth.poses import ANGLE_RANGES, from_paper_theta, local_angles, sample_artificial_poses


def test_paper_azimuth_maps_the_persons_right_to_ours():
    assert from_paper_theta(180.0) == -90.0  # the paper's right hip (theta = pi) is our -90 deg
    assert (from_paper_theta(120.0), from_paper_theta(240.0)) == (-150.0, -30.0)


def test_stated_ranges_are_the_papers():
    assert ANGLE_RANGES["r_shoulder"].theta == (from_paper_theta(120.0), from_paper_theta(240.0))  # a 120 deg span
    assert ANGLE_RANGES["r_hip"] == ANGLE_RANGES["r_hip"]._replace(theta=(-90.0, -90.0), gamma=(60.0, 120.0))
    assert ANGLE_RANGES["neck"].theta == ANGLE_RANGES["neck"].gamma == (0.0, 0.0)
    for name in ("r_shoulder", "r_hip", "neck"):
        assert "suppl" in ANGLE_RANGES[name].source, name
    for name, r in ANGLE_RANGES.items():
        assert len(r.source) > 20, name


def test_sampled_right_shoulder_azimuth_spans_120_degrees():
    poses = sample_artificial_poses(4000, torch.Generator().manual_seed(0), dtype=torch.float64)
    theta = torch.rad2deg(local_angles(poses).theta[:, joint_index("r_shoulder")])
    assert theta.min() == pytest.approx(-150.0, abs=2.0) and theta.max() == pytest.approx(-30.0, abs=2.0)
