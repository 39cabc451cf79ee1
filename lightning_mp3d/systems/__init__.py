"""LightningModules, one per training stage: teacher (0), aae (1), distill (2), phase1 (3), phase2 (4).

Each import is guarded so a stage whose module is missing or broken in a partial tree does not hide the others;
``import lightning_mp3d.systems.<module>`` directly to see its error.
"""

__all__: list[str] = []

try:
    from lightning_mp3d.systems.teacher import TeacherPretraining  # noqa: F401
except ImportError:  # pragma: no cover - depends on the state of the tree
    pass
else:
    __all__.append("TeacherPretraining")

try:
    from lightning_mp3d.systems.aae import AAEPretraining  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    __all__.append("AAEPretraining")

try:
    from lightning_mp3d.systems.distill import DistillationWarmup  # noqa: F401
    from lightning_mp3d.systems.phase1 import Phase1Alignment  # noqa: F401
    from lightning_mp3d.systems.phase2 import Phase2SelfSupervised  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    __all__ += ["DistillationWarmup", "Phase1Alignment", "Phase2SelfSupervised"]
