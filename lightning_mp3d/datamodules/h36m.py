"""Human3.6M-style evaluation arrays (Table 6: S9/S11, MPJPE after root alignment, per action).

The ``.npz`` layout (one file; build it from Human3.6M with your own converter)::

    poses_3d      (N, J, 3) float   millimetres, camera frame; J = 15 (our order) or 17 (Human3.6M's 17-joint order:
                                    pelvis, r_hip, r_knee, r_ankle, l_hip, l_knee, l_ankle, spine, thorax, neck/nose,
                                    head, l_shoulder, l_elbow, l_wrist, r_shoulder, r_elbow, r_wrist)
    poses_2d      (N, J, 2) float   pixels in the original frame
    subject       (N,) int          subject number (9, 11, ...)
    action        (N,) int          index into action_names
    action_names  (A,) str          e.g. Directions, Discussion, ...
    image_size    (2,) or (N, 2)    original frame (W, H); default (1000, 1000)
    images        (N, S, S, 3) uint8   optional: frames already at the model input size S
    image_paths   (N,) str          optional (instead of images): frame files relative to the .npz folder

Each item is one frame with one person (G = 1), with the same keys as ``MuPoTSDataset`` (``sequence`` is the action
index), so the evaluation runner handles both; pair predictions by index (``match=MatchSpec("index")``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_mp3d.imageio import Letterbox, fit_letterbox, read_fitted
from lightning_mp3d.skeleton import NUM_JOINTS

# ours[k] = h36m17[H36M17_TO_OURS[k]]: the thorax (8) is our neck and the head (10) our head top.
H36M17_TO_OURS: tuple[int, ...] = (0, 8, 10, 14, 11, 15, 12, 16, 13, 1, 4, 2, 5, 3, 6)
REQUIRED_KEYS = ("poses_3d", "poses_2d", "subject", "action", "action_names")


class H36MArrays:
    """Validated arrays of a Human3.6M-style ``.npz`` restricted to ``subjects``; joints in our order."""

    def __init__(self, path: str | Path, subjects: tuple[int, ...] = (9, 11)) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"missing Human3.6M arrays {self.path}")
        with np.load(self.path, allow_pickle=False) as z:
            missing = [k for k in REQUIRED_KEYS if k not in z.files]
            if missing:
                raise ValueError(f"{self.path} lacks keys {missing}; expected {list(REQUIRED_KEYS)} (see h36m.py)")
            data = {k: z[k] for k in z.files}
        p3, p2 = data["poses_3d"], data["poses_2d"]
        if p3.ndim != 3 or p3.shape[1:] not in ((NUM_JOINTS, 3), (17, 3)):
            raise ValueError(f"{self.path}: poses_3d must be (N, 15|17, 3) mm, got {p3.shape}")
        if p2.shape != (*p3.shape[:2], 2):
            raise ValueError(f"{self.path}: poses_2d must be {(*p3.shape[:2], 2)}, got {p2.shape}")
        n = len(p3)
        for k in ("subject", "action"):
            if data[k].shape != (n,):
                raise ValueError(f"{self.path}: {k} must be ({n},), got {data[k].shape}")
        if p3.shape[1] == 17:
            p3, p2 = p3[:, list(H36M17_TO_OURS)], p2[:, list(H36M17_TO_OURS)]
        self.action_names = [str(a) for a in data["action_names"]]
        if n and (data["action"].min() < 0 or data["action"].max() >= len(self.action_names)):
            raise ValueError(f"{self.path}: action indices must lie in [0, {len(self.action_names)})")
        keep = np.isin(data["subject"], subjects)
        self.poses_3d, self.poses_2d = p3[keep].astype(np.float32), p2[keep].astype(np.float32)
        self.subject, self.action = data["subject"][keep], data["action"][keep].astype(np.int64)
        size = np.asarray(data.get("image_size", np.array([1000, 1000])), dtype=np.float32)
        self.image_size = np.broadcast_to(size if size.ndim == 1 else size[keep], (len(self.action), 2))
        self.images = data["images"][keep] if "images" in data else None
        self.image_paths = [str(p) for p in data["image_paths"][keep]] if "image_paths" in data else None


class H36MDataset(Dataset):
    """One item per frame, G = 1; keys as ``MuPoTSDataset`` (``sequence`` = action index)."""

    def __init__(
        self, path: str | Path, subjects: tuple[int, ...] = (9, 11), input_size: int = 224, fit: str = "pad"
    ) -> None:
        self.arrays = H36MArrays(path, subjects)
        self.input_size, self.fit = input_size, fit

    def __len__(self) -> int:
        return len(self.arrays.action)

    def _image(self, i: int, size: tuple[int, int]) -> torch.Tensor:
        a = self.arrays
        if a.images is not None:
            return torch.from_numpy(a.images[i].astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
        if a.image_paths is not None:
            path = a.path.parent / a.image_paths[i]
            fitted = read_fitted(path, self.input_size, self.fit, "Human3.6M")
            if tuple(int(x) for x in fitted.original_size.flip(0)) != size:
                raise ValueError(f"{path}: frame is {fitted.original_size.flip(0).tolist()} px, image_size says {size}")
            return fitted.image
        return torch.zeros(3, self.input_size, self.input_size)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        a = self.arrays
        w, h = (float(x) for x in a.image_size[i])
        letterbox = fit_letterbox(int(h), int(w), self.input_size, self.fit).as_tensor()  # stored images: fitted alike
        gt_2d = torch.from_numpy(a.poses_2d[i])[None]
        pose = torch.from_numpy(a.poses_3d[i])[None]
        return {
            "image": self._image(i, (int(w), int(h))),
            "gt_poses": pose,
            "gt_poses_univ": pose,
            "gt_2d": gt_2d,
            "gt_2d_input": Letterbox.from_tensor(letterbox).to_input(gt_2d),
            "gt_mask": torch.ones(1, dtype=torch.bool),
            "occluded": torch.zeros(1, NUM_JOINTS, dtype=torch.bool),
            "sequence": torch.tensor(int(a.action[i]), dtype=torch.long),
            "frame": torch.tensor(i, dtype=torch.long),
            "letterbox": letterbox,
            "image_size": torch.tensor([w, h], dtype=torch.float32),
        }


class H36MDataModule(pl.LightningDataModule):
    """Test-only DataModule over ``H36MDataset``."""

    def __init__(
        self,
        path: str,
        subjects: tuple[int, ...] = (9, 11),
        input_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset: H36MDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load the arrays once."""
        if self.dataset is None:
            self.dataset = H36MDataset(self.hparams.path, tuple(self.hparams.subjects), self.hparams.input_size)

    def test_dataloader(self) -> DataLoader:
        """Frames in file order."""
        self.setup("test")
        return DataLoader(self.dataset, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)
