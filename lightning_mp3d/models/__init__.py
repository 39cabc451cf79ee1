"""Plain nn.Modules: the teacher {E, F} (OpenPose port and embedded), the AAE {Φ, Ψ, Disc}, student G/H and M."""

from lightning_mp3d.models.aae import PoseDecoder, PoseDiscriminator, PoseEncoder, load_pose_decoder
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import PoseMapEncoder, SceneHead
from lightning_mp3d.models.teacher import EmbeddedTeacher, OpenPoseTeacher, Teacher, load_teacher

__all__ = [
    "EmbeddedTeacher",
    "OpenPoseTeacher",
    "PoseDecoder",
    "PoseDiscriminator",
    "PoseEncoder",
    "PoseMapEncoder",
    "SceneDecoder",
    "SceneHead",
    "Teacher",
    "load_pose_decoder",
    "load_teacher",
]
