"""LightningModules, one per training stage: teacher (0), aae (1), distill (2), phase1 (3), phase2 (4), refine (5)."""

from lightning_mp3d.systems.aae import AAEPretraining
from lightning_mp3d.systems.distill import DistillationWarmup
from lightning_mp3d.systems.phase1 import Phase1Alignment
from lightning_mp3d.systems.phase2 import Phase2SelfSupervised
from lightning_mp3d.systems.refine import Refinement
from lightning_mp3d.systems.teacher import TeacherPretraining

__all__ = [
    "AAEPretraining",
    "DistillationWarmup",
    "Phase1Alignment",
    "Phase2SelfSupervised",
    "Refinement",
    "TeacherPretraining",
]
