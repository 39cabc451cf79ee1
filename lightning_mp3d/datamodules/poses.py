"""Single-person canonical poses for the AAE stage: artificial poses sampled on the fly, or a pose file.

Sources
-------
- ``path=None`` (default): *Artificial-pose-sampling* (``lightning_mp3d.synth.sample_artificial_poses``), generated
  in batches on the fly, batch ``i`` of epoch ``e`` on rank ``r`` from its own seed (``datamodules/streams.py``), so
  DDP ranks see different poses and a resumed run continues the same stream. The held-out validation set is
  ``val_size`` poses drawn once with a separate seed.
- ``path="poses.npz"``: a NumPy ``.npz`` with key ``poses``: (N, J, 3) 3D joint positions in millimetres in any
  frame, J = 15 in our order (``skeleton.JOINTS``) or J = 17 in the MPI-INF-3DHP / MuPoTS-3D order
  (``skeleton.MUPOTS17_JOINTS``). The order is ``joint_order`` ("ours" or "mupots17"); with "auto" it is read
  from an optional string entry ``joint_order`` of the file, else inferred from J. A bare array (``.npy``, or a
  ``.pt``/``.pth`` holding one tensor) is read the same way with the order inferred from J. Every pose is converted
  to a canonical pose with the skeleton's fixed bone lengths by ``synth.poses.normalize_bone_lengths`` (suppl. 2.2),
  so only joint angles are kept; D_syn's pose bank (``DSynDataModule(pose_bank=...)``) reads files with the same
  ``load_pose_file``. A seeded random ``val_fraction`` of the poses is held out for validation.

Batches are canonical poses p_c: (B, 15, 3) float32 millimetres.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from lightning_mp3d.datamodules.streams import EpochDataLoader, SeededBatchStream
from lightning_mp3d.skeleton import LIMBS, MUPOTS17_TO_OURS, NUM_JOINTS
from lightning_mp3d.synth.poses import normalize_bone_lengths

JOINT_ORDERS = ("ours", "mupots17")
_JOINTS_OF_ORDER = {"ours": NUM_JOINTS, "mupots17": 17}
MIN_BONE_MM = 1.0  # a pose file bone shorter than this is degenerate (all joints at one point, a zeroed frame)


def poses_to_canonical(poses: torch.Tensor, joint_order: str) -> torch.Tensor:
    """Joint positions of a pose file -> canonical poses with the skeleton's fixed bone lengths.

    Args:
        poses: (N, J, 3) millimetres, any frame.
        joint_order: "ours" (J = 15) or "mupots17" (J = 17).

    Returns:
        p_c (N, 15, 3) millimetres.
    """
    if joint_order not in JOINT_ORDERS:
        raise ValueError(f"joint_order must be one of {JOINT_ORDERS}, got {joint_order!r}")
    expected = _JOINTS_OF_ORDER[joint_order]
    if poses.ndim != 3 or poses.shape[1:] != (expected, 3):
        raise ValueError(f"poses in {joint_order!r} order must be (N, {expected}, 3), got {tuple(poses.shape)}")
    if joint_order == "mupots17":
        poses = poses[:, list(MUPOTS17_TO_OURS), :]
    return normalize_bone_lengths(poses)


def load_pose_file(path: str | Path, joint_order: str = "auto") -> torch.Tensor:
    """Read a pose file (``.npz``, ``.npy``, ``.pt``; see the module docstring) as canonical poses.

    Returns (N, 15, 3) float32 millimetres with the fixed bone lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pose file not found: {path}")
    try:
        poses, joint_order = _read_pose_array(path, joint_order)
    except (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        if isinstance(err, ValueError) and str(path) in str(err):  # already ours, naming the file
            raise
        raise ValueError(f"{path}: cannot read the pose file ({type(err).__name__}: {err})") from None
    if joint_order == "auto":
        by_count = {v: k for k, v in _JOINTS_OF_ORDER.items()}
        if poses.ndim != 3 or poses.shape[1] not in by_count:
            raise ValueError(f"{path}: 'poses' must be (N, 15 or 17, 3), got {tuple(poses.shape)}")
        joint_order = by_count[poses.shape[1]]
    if not torch.isfinite(poses).all():
        raise ValueError(f"{path}: 'poses' contains NaN or infinite values")
    try:
        canonical = poses_to_canonical(poses, joint_order).float()
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    ours = poses[:, list(MUPOTS17_TO_OURS)] if joint_order == "mupots17" else poses
    parents, children = (list(x) for x in zip(*LIMBS))
    short = ((ours[:, children] - ours[:, parents]).norm(dim=-1) < MIN_BONE_MM).any(-1)  # (N,)
    if short.any():
        raise ValueError(
            f"{path}: {int(short.sum())} of {len(poses)} poses are degenerate (a bone shorter than {MIN_BONE_MM} mm, "
            f"e.g. pose {int(short.nonzero()[0])}); remove them"
        )
    return canonical


def _read_pose_array(path: Path, joint_order: str) -> tuple[torch.Tensor, str]:
    """The raw (N, J, 3) float64 array of a pose file and its joint order (read from an ``.npz`` if it says)."""
    if path.suffix in (".pt", ".pth"):
        poses = torch.load(path, weights_only=True)
        if not isinstance(poses, torch.Tensor):
            raise ValueError(f"{path} must hold one tensor (N, J, 3), got {type(poses).__name__}")
        return poses.double(), joint_order
    if path.suffix == ".npy":
        return torch.as_tensor(np.load(path, allow_pickle=False), dtype=torch.float64), joint_order
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds one array, not an .npz archive; name it .npy or save it with np.savez")
    with data:
        if "poses" not in data:
            raise ValueError(f"{path} has no 'poses' array (N, J, 3); keys: {sorted(data.keys())}")
        poses = torch.as_tensor(np.asarray(data["poses"], dtype=np.float64))
        if joint_order == "auto" and "joint_order" in data:
            joint_order = str(data["joint_order"])
    return poses, joint_order


class ArtificialPoseBatches(SeededBatchStream):
    """``batches`` batches of artificial canonical poses per epoch and rank, split among DataLoader workers.

    Use with ``EpochDataLoader(dataset, batch_size=None)``: each item is already a batch (batch_size, 15, 3).
    """

    def __init__(self, batch_size: int, batches: int, seed: int = 0, range_scale: float = 1.0) -> None:
        super().__init__(batches, seed)
        self.batch_size, self.range_scale = batch_size, range_scale

    @override
    def make(self, generator: torch.Generator) -> torch.Tensor:
        from lightning_mp3d.synth.poses import sample_artificial_poses

        return sample_artificial_poses(
            self.batch_size, generator, dtype=torch.float32, device="cpu", range_scale=self.range_scale
        )


class PoseDataModule(LightningDataModule):
    """Canonical single-person poses for ``AAEPretraining``.

    Args:
        path: ``.npz`` pose file (see the module docstring); None samples artificial poses on the fly.
        joint_order: "auto", "ours" or "mupots17" (pose files only).
        batch_size: poses per training batch.
        batches_per_epoch: training batches per epoch and rank for artificial poses (validation runs each epoch).
        val_size: held-out artificial validation poses.
        val_fraction: held-out fraction of a pose file.
        val_batch_size: poses per validation batch.
        range_scale: scale of the artificial joint-angle ranges (``sample_artificial_poses``).
        seed: base seed of the sampling streams and of the file split.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        path: str | None = None,
        joint_order: str = "auto",
        batch_size: int = 32,
        batches_per_epoch: int = 1000,
        val_size: int = 4096,
        val_fraction: float = 0.1,
        val_batch_size: int = 1024,
        range_scale: float = 1.0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if joint_order not in ("auto", *JOINT_ORDERS):
            raise ValueError(f"joint_order must be 'auto', 'ours' or 'mupots17', got {joint_order!r}")
        if batch_size < 1 or batches_per_epoch < 1 or val_size < 1 or val_batch_size < 1:
            raise ValueError("batch_size, batches_per_epoch, val_size and val_batch_size must be >= 1")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.train_set: ArtificialPoseBatches | TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    @override
    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.val_set is not None:
            return
        if hp.path is None:
            from lightning_mp3d.synth.poses import sample_artificial_poses

            generator = torch.Generator().manual_seed(hp.seed + 1_000_003)  # disjoint from the training streams
            val = sample_artificial_poses(
                hp.val_size, generator, dtype=torch.float32, device="cpu", range_scale=hp.range_scale
            )
            self.train_set = ArtificialPoseBatches(hp.batch_size, hp.batches_per_epoch, hp.seed, hp.range_scale)
        else:
            poses = load_pose_file(hp.path, hp.joint_order)
            n_val = max(1, int(round(hp.val_fraction * len(poses))))
            if len(poses) - n_val < hp.batch_size:
                raise ValueError(f"{hp.path}: {len(poses)} poses leave fewer than batch_size={hp.batch_size} to train")
            order = torch.randperm(len(poses), generator=torch.Generator().manual_seed(hp.seed))
            val = poses[order[:n_val]]
            self.train_set = TensorDataset(poses[order[n_val:]])
        self.val_set = TensorDataset(val)

    @override
    def train_dataloader(self) -> DataLoader:
        if isinstance(self.train_set, ArtificialPoseBatches):
            return EpochDataLoader(self.train_set, batch_size=None, num_workers=self.hparams.num_workers)
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.hparams.num_workers,
            collate_fn=_stack_poses,
        )

    @override
    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=self.hparams.val_batch_size,
            num_workers=self.hparams.num_workers,
            collate_fn=_stack_poses,
        )


def _stack_poses(items: list[tuple[torch.Tensor]]) -> torch.Tensor:
    """Collate TensorDataset items into one (B, 15, 3) tensor."""
    return torch.stack([item[0] for item in items])
