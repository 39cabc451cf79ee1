"""MuCo-3DHP (Mehta et al. 2018): D_I images with 2D/3D ground truth, for Ours-Ws / Ours-Fs (Tables 2/3).

Layout (the widely used COCO-style release of the composited set, as read by RootNet/PoseNet)::

    <root>/MuCo-3DHP.json   {"images": [{"id", "file_name", "width", "height", "f": [fx, fy], "c": [cx, cy]}, ...],
                             "annotations": [{"image_id", "keypoints_img" (21 x 2 px),
                                              "keypoints_cam" (21 x 3 mm, camera frame),
                                              "keypoints_vis" (21,) bool, ...}, ...]}
    <root>/<file_name>      the composited frames (e.g. augmented_set/000001/img_000001.jpg)

The 21 MuCo joints start with MuPoTS-3D's 17 (head_top, thorax, right arm, left arm, right leg, left leg, pelvis,
spine, head; then hands and toes), so ``skeleton.MUPOTS17_TO_OURS`` selects ours.

Each frame is fitted to the 224 px model input like MuPoTS-3D (``imageio.fit_image``, letterbox by default) and
its GT is expressed as the model sees it, with the keys of the rendered D_I shards that the supervised switches
read (``use_weak_2d``: ``joints_2d``, ``visibility``; ``use_full_3d``: ``poses``; both: ``roots_px``,
``root_cells``, ``mask``):

- ``joints_2d`` (P, 15, 2): ``keypoints_img`` in input px; ``roots_px`` (P, 2) its pelvis; ``root_cells`` (P, 2)
  long (col, row) on H's 14 x 14 grid; ``visibility`` (P, 15) bool;
- ``poses`` (P, 15, 3) mm: ``keypoints_cam`` in the model's f = 224 px input camera
  (``geometry.camera.from_real_camera``: same root pixel, same root-relative pose, apparent-size depth);
  ``depth`` (P,) its root depth; ``mask`` (P,) bool.

Training reads MuCo through shards: ``write_muco_shards`` (or ``python -m lightning_mp3d.datamodules.muco
--root MuCo --out shards/muco``) writes ``<out>/muco-%06d.tar`` with the fitted 224 px JPEG and these tensors, which
``ImageDataModule(train="shards/muco/muco-*.tar")`` reads (the fit is then the identity).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_mp3d.geometry import Intrinsics, pixel_to_grid
from lightning_mp3d.geometry.camera import from_real_camera
from lightning_mp3d.imageio import Letterbox, fit_letterbox, read_fitted
from lightning_mp3d.skeleton import MUPOTS17_TO_OURS, NUM_JOINTS, ROOT

ANNOTATION_FILE = "MuCo-3DHP.json"
MUCO_JOINTS = 21
OUTPUT_GRID = 14


class MuCoDataset(Dataset):
    """One item per MuCo-3DHP frame, GT in the 224 px input (see the module docstring), padded to ``max_people``.

    Args:
        root: folder holding ``MuCo-3DHP.json`` and the image folders.
        input_size: model input side (224).
        fit: "pad" (letterbox) or "crop" (centre crop), as ``imageio.fit_image``.
        max_people: padding size (default: the most people annotated in one frame).
    """

    def __init__(self, root: str | Path, input_size: int = 224, fit: str = "pad", max_people: int | None = None):
        self.root = Path(root)
        path = self.root / ANNOTATION_FILE
        if not path.is_file():
            raise ValueError(f"missing MuCo-3DHP annotations {path}")
        data = json.loads(path.read_text())
        if not {"images", "annotations"} <= data.keys():
            raise ValueError(f"{path}: expected COCO-style 'images' and 'annotations', got {sorted(data)}")
        self.images = sorted(data["images"], key=lambda im: im["id"])
        people: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in data["annotations"]:
            if ann["image_id"] not in people:
                raise ValueError(f"{path}: annotation of unknown image_id {ann['image_id']}")
            people[ann["image_id"]].append(ann)
        self.people = people
        most = max((len(p) for p in people.values()), default=0)
        self.max_people = most if max_people is None else max_people
        if self.max_people < most:
            raise ValueError(f"max_people={max_people} is below the {most} people annotated in one MuCo frame")
        self.input_size, self.fit = input_size, fit
        self.virtual = Intrinsics.for_image(input_size)

    def __len__(self) -> int:
        return len(self.images)

    def _arrays(self, image: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        anns, g = self.people[image["id"]], self.max_people
        kp2, kp3, vis = np.zeros((g, NUM_JOINTS, 2)), np.zeros((g, NUM_JOINTS, 3)), np.zeros((g, NUM_JOINTS), bool)
        ours = list(MUPOTS17_TO_OURS)
        for k, ann in enumerate(anns):
            a2, a3 = np.asarray(ann["keypoints_img"], float), np.asarray(ann["keypoints_cam"], float)
            v = np.asarray(ann.get("keypoints_vis", np.ones(MUCO_JOINTS)), bool).reshape(-1)
            if a2.shape != (MUCO_JOINTS, 2) or a3.shape != (MUCO_JOINTS, 3) or v.shape != (MUCO_JOINTS,):
                raise ValueError(
                    f"{image['file_name']}: keypoints_img/cam/vis must be (21, 2)/(21, 3)/(21,), "
                    f"got {a2.shape}/{a3.shape}/{v.shape}"
                )
            kp2[k], kp3[k], vis[k] = a2[ours], a3[ours], v[ours]
        return kp2, kp3, vis

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        image = self.images[idx]
        fitted = read_fitted(self.root / image["file_name"], self.input_size, self.fit, "MuCo-3DHP")
        h, w = (int(x) for x in fitted.original_size)
        letterbox = fit_letterbox(h, w, self.input_size, self.fit).as_tensor(torch.float64)  # GT maps in float64
        (fx, fy), (cx, cy) = image["f"], image["c"]
        intrinsics = torch.tensor([fx, fy, cx, cy], dtype=torch.float64)
        kp2, kp3, vis = (torch.from_numpy(a) for a in self._arrays(image))
        mask = torch.arange(self.max_people) < len(self.people[image["id"]])
        poses = from_real_camera(kp3, letterbox, intrinsics, self.virtual)  # (P, 15, 3)
        joints_2d = Letterbox.from_tensor(letterbox).to_input(kp2).float()
        roots_px = joints_2d[:, ROOT]
        m = mask[:, None]
        return {
            "image": fitted.image,
            "poses": torch.where(m[..., None], poses, 0.0).float(),
            "joints_2d": torch.where(m[..., None], joints_2d, 0.0),
            "visibility": vis & m,
            "roots_px": torch.where(m, roots_px, 0.0),
            "root_cells": pixel_to_grid(roots_px, OUTPUT_GRID, self.input_size) * m,
            "depth": torch.where(mask, poses[:, ROOT, 2], 0.0).float(),
            "mask": mask,
        }

    def key(self, idx: int) -> str:
        """Shard key of frame ``idx``: its file name without extension, '/' and '.' replaced by '_'."""
        return str(Path(self.images[idx]["file_name"]).with_suffix("")).replace("/", "_").replace(".", "_")


def write_muco_shards(
    root: str | Path, out_dir: str | Path, *, images_per_shard: int = 1000, fit: str = "pad", progress: bool = True
) -> list[Path]:
    """MuCo-3DHP -> webdataset shards ``<out_dir>/muco-%06d.tar`` of fitted 224 px JPEGs and their GT tensors.

    Returns:
        The shard paths, sorted.
    """
    from tqdm.auto import tqdm

    from lightning_mp3d.datamodules.shards import AtomicShardWriter, encode_sample
    from lightning_mp3d.imageio import encode_image

    dataset = MuCoDataset(root, fit=fit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with AtomicShardWriter(str(out / "muco-%06d.tar"), maxcount=images_per_shard, verbose=0) as sink:
        for i in tqdm(range(len(dataset)), desc="MuCo-3DHP shards", unit="img", disable=not progress):
            item = dataset[i]
            sample = encode_sample(dataset.key(i), {k: v for k, v in item.items() if k != "image"})
            sample["jpg"] = encode_image(item["image"], "jpg")
            sink.write(sample)
    return sorted(out.glob("muco-*.tar"))


def main(argv: list[str] | None = None) -> int:
    """``python -m lightning_mp3d.datamodules.muco --root MuCo --out shards/muco``."""
    parser = argparse.ArgumentParser(description=write_muco_shards.__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder with MuCo-3DHP.json and the images")
    parser.add_argument("--out", required=True, help="output folder for muco-%%06d.tar")
    parser.add_argument("--images-per-shard", type=int, default=1000)
    args = parser.parse_args(argv)
    shards = write_muco_shards(args.root, args.out, images_per_shard=args.images_per_shard)
    print(f"wrote {len(shards)} shards: {args.out}/muco-{{000000..{len(shards) - 1:06d}}}.tar")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
