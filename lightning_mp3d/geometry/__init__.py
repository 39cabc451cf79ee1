"""Differentiable pose geometry: canonical frame, T_L, FK, T_R, T_G, T_K and Procrustes alignment.

Pure tensor code (no Lightning). Every function takes any leading batch shape; see each module's
convention header (pose.py, rigid.py, camera.py).
"""

from lightning_mp3d.geometry.camera import (
    Intrinsics,
    grid_to_pixel,
    pixel_to_grid,
    project,
    root_position,
    translate,
)
from lightning_mp3d.geometry.pose import (
    canonical_frame,
    forward_kinematics,
    local_to_spherical,
    normalize,
    spherical_to_local,
    to_canonical,
    to_local,
)
from lightning_mp3d.geometry.rigid import (
    CANONICAL_TO_CAMERA,
    Alignment,
    canonical_to_camera_rotation,
    euler_to_sincos,
    matrix_to_sincos,
    procrustes_align,
    rotate,
    sincos_to_euler,
    sincos_to_matrix,
    unrotate,
)

__all__ = [
    "CANONICAL_TO_CAMERA",
    "Alignment",
    "Intrinsics",
    "canonical_frame",
    "canonical_to_camera_rotation",
    "euler_to_sincos",
    "forward_kinematics",
    "grid_to_pixel",
    "local_to_spherical",
    "matrix_to_sincos",
    "normalize",
    "pixel_to_grid",
    "procrustes_align",
    "project",
    "root_position",
    "rotate",
    "sincos_to_euler",
    "sincos_to_matrix",
    "spherical_to_local",
    "to_canonical",
    "to_local",
    "translate",
    "unrotate",
]
