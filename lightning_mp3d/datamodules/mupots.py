"""MuPoTS-3D test set: ``TS1``..``TS20`` folders read with scipy, frames fitted to the 224 px model input.

Layout (as released by MPI, read the same way as ``mpii_mupots_multiperson_eval.m``)::

    <root>/TS<n>/annot.mat       variable ``annotations``: cell (frames x people) of structs with fields
                                 annot2 (2 x 17 px), annot3 (3 x 17 mm, camera frame),
                                 univ_annot3 (3 x 17 mm, universal skeleton height), isValidFrame (1 x 1)
    <root>/TS<n>/occlusion.mat   variable ``occlusion_labels``: cell (frames x people) of 1 x 17 logical
    <root>/TS<n>/img_%06d.jpg    frame i (0-based)

Joints are MuPoTS's 17 (``skeleton.MUPOTS17_JOINTS``) and become ours with ``skeleton.MUPOTS17_TO_OURS``.
Intrinsics are not in ``annot.mat``: pass a JSON ``{"TS1": {"fx":..,"fy":..,"cx":..,"cy":..}, ...}`` or let
``fit_intrinsics`` solve them per sequence from the annot2/annot3 correspondences (linear least squares of
``u = fx X/Z + cx``, ``v = fy Y/Z + cy`` over every valid joint).

Input: each frame is letterboxed (``fit="pad"``, default: the whole frame, scaled by 224 / max(H, W) and centred
on black) or centre-cropped (``fit="crop"``: scale 224 / min(H, W)) to 224 x 224 by ``imageio.fit_image``, the fit
of every real image. Items record ``letterbox`` (``imageio.Letterbox``: ``input_px = scale * full_px + offset``);
evaluation maps predictions back with ``to_original``, so the official 40 px matching runs on full-resolution pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytorch_lightning as pl
import scipy.io
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_mp3d.geometry import Intrinsics
from lightning_mp3d.imageio import Letterbox, read_fitted
from lightning_mp3d.skeleton import MUPOTS17_TO_OURS

NUM_SEQUENCES = 20


class MuPoTSSequence(NamedTuple):
    """One TS folder's annotations as arrays (F frames, N annotated people, MuPoTS 17-joint order)."""

    annot2: np.ndarray  # (F, N, 17, 2) px
    annot3: np.ndarray  # (F, N, 17, 3) mm, camera frame
    univ_annot3: np.ndarray  # (F, N, 17, 3) mm
    valid: np.ndarray  # (F, N) bool (isValidFrame)
    occluded: np.ndarray  # (F, N, 17) bool


def _loadmat(path: Path) -> dict:
    """``scipy.io.loadmat`` with errors that name the file."""
    try:
        return scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file ({type(err).__name__}: {err})") from None


def _field(struct: np.ndarray, name: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(struct[name][0, 0], dtype=np.float64)
    except (ValueError, KeyError, IndexError):
        raise ValueError(
            f"{path}: annotation struct lacks field {name!r}; expected annot2, annot3, univ_annot3, isValidFrame"
        ) from None


def load_sequence(ts_dir: str | Path) -> MuPoTSSequence:
    """Read ``annot.mat`` and ``occlusion.mat`` of one ``TS<n>`` folder."""
    ts_dir = Path(ts_dir)
    annot_path, occ_path = ts_dir / "annot.mat", ts_dir / "occlusion.mat"
    for p in (annot_path, occ_path):
        if not p.is_file():
            raise ValueError(f"missing MuPoTS-3D file {p}; expected TS<n>/annot.mat and TS<n>/occlusion.mat")
    mat = _loadmat(annot_path)
    if "annotations" not in mat:
        raise ValueError(
            f"{annot_path} has no variable 'annotations' (found {sorted(k for k in mat if not k.startswith('__'))})"
        )
    cells = mat["annotations"]  # (F, N) object array of 1x1 structs
    if cells.ndim != 2:
        raise ValueError(f"{annot_path}: 'annotations' must be a (frames x people) cell array, got shape {cells.shape}")
    f, n = cells.shape
    a2 = np.zeros((f, n, 17, 2))
    a3 = np.zeros((f, n, 17, 3))
    u3 = np.zeros((f, n, 17, 3))
    valid = np.zeros((f, n), dtype=bool)
    for i in range(f):  # file parsing (once per sequence), not a hot path
        for k in range(n):
            s = cells[i, k]
            try:
                a2[i, k] = _field(s, "annot2", annot_path).T
                a3[i, k] = _field(s, "annot3", annot_path).T
                u3[i, k] = _field(s, "univ_annot3", annot_path).T
                valid[i, k] = bool(_field(s, "isValidFrame", annot_path).reshape(-1)[0])
            except (ValueError, IndexError) as err:
                if str(annot_path) in str(err):
                    raise
                raise ValueError(f"{annot_path}: frame {i}, person {k}: joints must be 2x17 / 3x17 ({err})") from None
    occ_mat = _loadmat(occ_path)
    if "occlusion_labels" not in occ_mat:
        raise ValueError(f"{occ_path} has no variable 'occlusion_labels'")
    occ_cells = occ_mat["occlusion_labels"]
    if occ_cells.shape != (f, n):
        raise ValueError(f"{occ_path}: 'occlusion_labels' must be ({f}, {n}) like annotations, got {occ_cells.shape}")
    occluded = np.stack([np.stack([np.asarray(occ_cells[i, k]).reshape(17) for k in range(n)]) for i in range(f)])
    return MuPoTSSequence(a2, a3, u3, valid, occluded.astype(bool))


def fit_intrinsics(annot2: np.ndarray, annot3: np.ndarray, valid: np.ndarray | None = None) -> Intrinsics:
    """Least-squares pinhole intrinsics from 2D/3D joint correspondences.

    Args:
        annot2: (..., 17, 2) px.
        annot3: (..., 17, 3) mm, camera frame.
        valid: (...) bool, the people to use (None: all).

    Returns:
        Intrinsics solving ``u = fx X/Z + cx`` and ``v = fy Y/Z + cy`` in the least-squares sense.
    """
    if valid is None:
        valid = np.ones(annot2.shape[:-2], dtype=bool)
    p2, p3 = annot2[valid].reshape(-1, 2), annot3[valid].reshape(-1, 3)
    p2, p3 = p2[p3[:, 2] > 1.0], p3[p3[:, 2] > 1.0]
    if len(p2) < 2:
        raise ValueError("fit_intrinsics needs at least 2 valid joints with positive depth")
    out = []
    for axis in (0, 1):
        a = np.stack((p3[:, axis] / p3[:, 2], np.ones(len(p3))), 1)
        (f, c), *_ = np.linalg.lstsq(a, p2[:, axis], rcond=None)
        out.append((f, c))
    return Intrinsics(out[0][0], out[1][0], out[0][1], out[1][1])


def parse_intrinsics(value: object, where: str) -> Intrinsics:
    """One camera from JSON: ``{"fx", "fy", "cx", "cy"}`` or a 3x3 ``K``; ``where`` names it in errors."""
    if isinstance(value, dict) and {"fx", "fy", "cx", "cy"} <= value.keys():
        return Intrinsics(float(value["fx"]), float(value["fy"]), float(value["cx"]), float(value["cy"]))
    if isinstance(value, list) and np.asarray(value).shape == (3, 3):
        k = np.asarray(value, dtype=float)
        return Intrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    raise ValueError(f"{where} must be {{fx, fy, cx, cy}} or a 3x3 K, got {value!r}")


def load_intrinsics_json(path: str | Path) -> dict[int, Intrinsics]:
    """``{"TS1": {"fx", "fy", "cx", "cy"}, ...}`` (or a 3x3 ``K`` per sequence) -> {1: Intrinsics, ...}."""
    data = json.loads(Path(path).read_text())
    out = {}
    for key, v in data.items():
        if not key.startswith("TS") or not key[2:].isdigit():
            raise ValueError(f"{path}: keys must be 'TS1'..'TS20', got {key!r}")
        out[int(key[2:])] = parse_intrinsics(v, f"{path}: {key}")
    return out


def load_input_image(path: Path, input_size: int, fit: str, what: str) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """A dataset frame as the model sees it: (image (3, S, S) in [0, 1], letterbox (3,), (w, h)).

    Raises ValueError naming ``what`` and the path when the frame is missing or unreadable.
    """
    fitted = read_fitted(path, input_size, fit, what)
    h, w = (int(x) for x in fitted.original_size)
    return fitted.image, fitted.letterbox, (w, h)


def pad_people(x: np.ndarray, slots: int) -> torch.Tensor:
    """Per-person array (P, ...) -> tensor (slots, ...) padded with zeros / False (float32 or bool)."""
    t = torch.as_tensor(x, dtype=torch.bool if x.dtype == bool else torch.float32)
    return torch.cat((t, t.new_zeros((slots - t.shape[0], *t.shape[1:]))))


class MuPoTSDataset(Dataset):
    """One item per frame with the sequence's annotated people padded to ``max_people``.

    Item keys: ``image`` (3, S, S) in [0, 1]; ``gt_poses`` (G, 15, 3) mm annot3; ``gt_poses_univ`` (G, 15, 3) mm;
    ``gt_2d`` (G, 15, 2) full-res px; ``gt_2d_input`` (G, 15, 2) input px; ``gt_mask`` (G,) bool (isValidFrame);
    ``occluded`` (G, 15) bool; ``sequence`` () long (TS1 -> 0); ``frame`` () long; ``letterbox`` (3,)
    ``imageio.Letterbox``; ``intrinsics`` (4,) ``geometry.Intrinsics`` fx, fy, cx, cy full-res px; ``image_size`` (2,)
    W, H.

    Args:
        root: folder holding ``TS1``..``TS20``.
        sequences: 1-based sequence numbers to load (default all 20 that exist).
        input_size: model input side (224).
        fit: "pad" (letterbox, default) or "crop" (centre crop).
        intrinsics_json: per-sequence intrinsics; without it they are fitted from the annotations.
        max_people: padding size (default: the most people annotated in any loaded sequence).
    """

    def __init__(
        self,
        root: str | Path,
        sequences: list[int] | None = None,
        input_size: int = 224,
        fit: str = "pad",
        intrinsics_json: str | Path | None = None,
        max_people: int | None = None,
    ) -> None:
        self.root = Path(root)
        if sequences is None:
            sequences = [n for n in range(1, NUM_SEQUENCES + 1) if (self.root / f"TS{n}").is_dir()]
        if not sequences:
            raise ValueError(f"no TS<n> folders under {self.root}")
        self.sequences = list(sequences)
        self.input_size, self.fit = input_size, fit
        given = load_intrinsics_json(intrinsics_json) if intrinsics_json is not None else {}
        self.data: dict[int, MuPoTSSequence] = {}
        self.intrinsics: dict[int, Intrinsics] = {}
        self.index: list[tuple[int, int]] = []
        for n in self.sequences:
            seq = load_sequence(self.root / f"TS{n}")
            self.data[n] = seq
            self.intrinsics[n] = given[n] if n in given else fit_intrinsics(seq.annot2, seq.annot3, seq.valid)
            self.index += [(n, i) for i in range(seq.valid.shape[0])]
        most = max(d.valid.shape[1] for d in self.data.values())
        self.max_people = most if max_people is None else max_people
        if self.max_people < most:
            raise ValueError(f"max_people={max_people} is below the {most} people annotated in a sequence")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        n, i = self.index[idx]
        seq, g = self.data[n], self.max_people
        path = self.root / f"TS{n}" / f"img_{i:06d}.jpg"
        image, letterbox, (w, h) = load_input_image(path, self.input_size, self.fit, "MuPoTS-3D")
        ours = list(MUPOTS17_TO_OURS)

        def pad(x: np.ndarray) -> torch.Tensor:
            return pad_people(x, g)

        gt_2d = pad(seq.annot2[i][:, ours])
        cam = self.intrinsics[n]
        return {
            "image": image,
            "gt_poses": pad(seq.annot3[i][:, ours]),
            "gt_poses_univ": pad(seq.univ_annot3[i][:, ours]),
            "gt_2d": gt_2d,
            "gt_2d_input": Letterbox.from_tensor(letterbox).to_input(gt_2d),
            "gt_mask": pad(seq.valid[i]),
            "occluded": pad(seq.occluded[i][:, ours]),
            "sequence": torch.tensor(n - 1, dtype=torch.long),
            "frame": torch.tensor(i, dtype=torch.long),
            "letterbox": letterbox,
            "intrinsics": torch.tensor([cam.fx, cam.fy, cam.cx, cam.cy], dtype=torch.float32),
            "image_size": torch.tensor([w, h], dtype=torch.float32),
        }


class MuPoTSDataModule(pl.LightningDataModule):
    """Test-only DataModule over ``MuPoTSDataset`` (frames in order; evaluate on one device for exact numbers)."""

    def __init__(
        self,
        root: str,
        sequences: list[int] | None = None,
        input_size: int = 224,
        fit: str = "pad",
        intrinsics_json: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset: MuPoTSDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Parse the annotations once."""
        if self.dataset is None:
            h = self.hparams
            self.dataset = MuPoTSDataset(h.root, h.sequences, h.input_size, h.fit, h.intrinsics_json)

    def test_dataloader(self) -> DataLoader:
        """Frames in sequence order."""
        self.setup("test")
        return DataLoader(self.dataset, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)

    predict_dataloader = test_dataloader
