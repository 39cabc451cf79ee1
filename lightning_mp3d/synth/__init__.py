"""Synthetic data: artificial poses, D_syn scenes, m_syn maps, the D_I renderer (pure tensor code, no Lightning)."""

from lightning_mp3d.synth.maps import MAP_CHANNELS, flip_maps, render_maps
from lightning_mp3d.synth.poses import (
    ANGLE_RANGES,
    JointRange,
    LocalAngles,
    joint_angle_violation,
    joint_ranges,
    local_angles,
    mirror_poses,
    normalize_bone_lengths,
    sample_artificial_poses,
    sample_local_angles,
)
from lightning_mp3d.synth.render import render_images
from lightning_mp3d.synth.scenes import Scenes, compose_scenes
from lightning_mp3d.synth.styles import DOMAIN_STYLES

__all__ = [
    "ANGLE_RANGES",
    "DOMAIN_STYLES",
    "MAP_CHANNELS",
    "JointRange",
    "LocalAngles",
    "Scenes",
    "compose_scenes",
    "flip_maps",
    "joint_angle_violation",
    "joint_ranges",
    "local_angles",
    "mirror_poses",
    "normalize_bone_lengths",
    "render_images",
    "render_maps",
    "sample_artificial_poses",
    "sample_local_angles",
]
