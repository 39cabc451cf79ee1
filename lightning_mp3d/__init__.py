"""lightning_mp3d: unsupervised cross-modal alignment for multi-person 3D pose estimation (Kundu et al., ECCV 2020)."""

__version__ = "0.1.0"
