"""Synthetic data: artificial poses, D_syn scenes, m_syn maps (pure tensor code, no Lightning)."""

from lightning_mp3d.synth.maps import MAP_CHANNELS, flip_maps, render_maps
from lightning_mp3d.synth.poses import (
    ANGLE_RANGES,
    JointRange,
    LocalAngles,
    joint_angle_violation,
    joint_ranges,
    local_angles,
    mirror_poses,
    sample_artificial_poses,
    sample_local_angles,
)
from lightning_mp3d.synth.scenes import Scenes, compose_scenes

__all__ = [
    "ANGLE_RANGES",
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
    "render_maps",
    "sample_artificial_poses",
    "sample_local_angles",
]

try:  # the embedded D_I renderer lives in its own module (another engineer's); export it once it imports
    from lightning_mp3d.synth.render import render_images  # noqa: F401
except ImportError:  # pragma: no cover - depends on the state of the tree
    pass
else:
    __all__.append("render_images")
