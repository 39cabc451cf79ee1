"""3DPW (von Marcard et al. 2018) for evaluation: MPJPE / PA-MPJPE (paper suppl. Table 2, "All-Test-mode").

Layout (as released)::

    <root>/sequenceFiles/{train,validation,test}/<sequence>.pkl   one pickled dict per sequence (Python 2 pickles:
                                                                   read with ``encoding="latin1"``)
    <root>/imageFiles/<sequence>/image_%05d.jpg                    frame i of the sequence (0-based)

Fields used from each ``.pkl`` (A actors, N frames): ``sequence`` (name), ``jointPositions`` (list of A arrays
(N, 72): the 24 SMPL joints' XYZ in metres, world frame), ``cam_poses`` (N, 4, 4) world -> camera,
``cam_intrinsics`` (3, 3) K, ``campose_valid`` (list of A arrays (N,): the actor's pose is aligned with frame i),
``img_frame_ids`` (N,) (its length is the frame count; frame i is ``image_%05d.jpg`` with i, as the released
evaluation code reads it). The pickles are the dataset's own files: only load ones you downloaded yourself.

Ground truth: ``X_cam = cam_poses[i] @ X_world`` in millimetres, our 15 joints from SMPL's 24 by
``SMPL24_TO_OURS`` (SMPL has no head top: our ``head`` is SMPL's head joint, about 10 cm below the top; the neck is
SMPL's neck), 2D by projecting through K. MPJPE and PA-MPJPE are computed on the SMPL joints directly rather than
on the 14 joints that some works regress from the SMPL mesh (that needs the SMPL model, which 3DPW does not ship).
Items have the keys of ``MuPoTSDataset`` (``sequence`` indexes the split's sorted sequences), so
``evaluation.evaluate`` scores them (2D matching at 40 px in full resolution, absolute metrics in the real camera).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_mp3d.datamodules.mupots import load_input_image, pad_people
from lightning_mp3d.imageio import Letterbox

# ours[k] = smpl24[SMPL24_TO_OURS[k]]: pelvis, neck, head, shoulders, elbows, wrists, hips, knees, ankles (r, l).
SMPL24_TO_OURS: tuple[int, ...] = (0, 12, 15, 17, 16, 19, 18, 21, 20, 2, 1, 5, 4, 8, 7)
SPLITS = ("train", "validation", "test")
REQUIRED_FIELDS = ("jointPositions", "cam_poses", "cam_intrinsics", "campose_valid", "img_frame_ids")


def load_sequence(path: str | Path) -> dict[str, np.ndarray | str]:
    """Read one ``sequenceFiles/<split>/<sequence>.pkl`` of 3DPW.

    Returns ``name``, ``joints`` (N, A, 15, 3) mm camera frame, ``joints_2d`` (N, A, 15, 2) px, ``valid`` (N, A) bool
    and ``K`` (3, 3).
    """
    path = Path(path)
    with path.open("rb") as f:
        data = pickle.load(f, encoding="latin1")  # noqa: S301 - the dataset's own format
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise ValueError(f"{path}: 3DPW sequence file lacks {missing}; expected {list(REQUIRED_FIELDS)}")
    n = len(data["img_frame_ids"])
    world = np.stack([np.asarray(j, dtype=np.float64).reshape(-1, 24, 3) for j in data["jointPositions"]], 1)
    cam = np.asarray(data["cam_poses"], dtype=np.float64)
    if world.shape[0] != n or cam.shape != (n, 4, 4):
        raise ValueError(f"{path}: jointPositions {world.shape[0]} / cam_poses {cam.shape} frames, expected {n}")
    joints = 1000.0 * (np.einsum("nij,napj->napi", cam[:, :3, :3], world) + cam[:, None, None, :3, 3])
    joints = joints[:, :, list(SMPL24_TO_OURS)]  # (N, A, 15, 3) mm
    k = np.asarray(data["cam_intrinsics"], dtype=np.float64)
    uv = joints[..., :2] / joints[..., 2:3]
    joints_2d = np.stack((k[0, 0] * uv[..., 0] + k[0, 2], k[1, 1] * uv[..., 1] + k[1, 2]), -1)
    valid = np.stack([np.asarray(v, dtype=bool).reshape(n) for v in data["campose_valid"]], 1)  # (N, A)
    return {"name": str(data.get("sequence", path.stem)), "joints": joints, "joints_2d": joints_2d, "valid": valid,
            "K": k}  # fmt: skip


class ThreeDPWDataset(Dataset):
    """One item per frame of a 3DPW split, actors padded to ``max_people``, with ``MuPoTSDataset``'s keys.

    Args:
        root: the 3DPW folder (``sequenceFiles/``, ``imageFiles/``).
        split: "test" (the paper's All-Test-mode evaluates on the 24 test sequences), "validation" or "train".
        input_size: model input side (224).
        fit: "pad" (letterbox) or "crop", as ``imageio.fit_image``.
    """

    def __init__(self, root: str | Path, split: str = "test", input_size: int = 224, fit: str = "pad") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        files = sorted((self.root / "sequenceFiles" / split).glob("*.pkl"))
        if not files:
            raise ValueError(f"no 3DPW sequence files under {self.root / 'sequenceFiles' / split}")
        self.sequences = [load_sequence(p) for p in files]
        self.sequence_names = [s["name"] for s in self.sequences]
        self.max_people = max(s["valid"].shape[1] for s in self.sequences)
        self.index = [(q, i) for q, s in enumerate(self.sequences) for i in range(len(s["valid"]))]
        self.input_size, self.fit = input_size, fit

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        q, i = self.index[idx]
        seq, g = self.sequences[q], self.max_people
        path = self.root / "imageFiles" / seq["name"] / f"image_{i:05d}.jpg"
        image, letterbox, (w, h) = load_input_image(path, self.input_size, self.fit, "3DPW")

        def pad(x: np.ndarray) -> torch.Tensor:
            return pad_people(x, g)

        gt_2d = pad(seq["joints_2d"][i])
        k = seq["K"]
        return {
            "image": image,
            "gt_poses": pad(seq["joints"][i]),
            "gt_2d": gt_2d,
            "gt_2d_input": Letterbox.from_tensor(letterbox).to_input(gt_2d),
            "gt_mask": pad(seq["valid"][i]),
            "sequence": torch.tensor(q, dtype=torch.long),
            "frame": torch.tensor(i, dtype=torch.long),
            "letterbox": letterbox,
            "intrinsics": torch.tensor([k[0, 0], k[1, 1], k[0, 2], k[1, 2]], dtype=torch.float32),
            "image_size": torch.tensor([w, h], dtype=torch.float32),
        }
