"""``mp3d-predict``: run the trained estimator on a folder of images or webdataset shards.

    mp3d-predict --checkpoint runs/phase2/checkpoints/last.ckpt --input photos/ --out predictions/

Per image: ``<out>/<key>.json`` with each person's camera-centric 3D joints (mm), 2D joints in the ORIGINAL image's
pixels and the root confidence, plus ``<key>.png`` (2D skeletons on the image, 3D skeletons in a plot). Images are
fitted to 224 px (``--fit crop|pad``); the 3D joints live in the camera of that 224-px input (f = 224 px), which in
the original image is a camera with focal ``224 * scale`` px and principal point ``112 * scale + offset``: the JSON
records it as ``camera``. With ``--intrinsics cam.json`` (``{"fx", "fy", "cx", "cy"}`` or a 3x3 ``K`` of the
original images, one camera for all inputs) the 3D joints are re-expressed in that real camera instead
(``geometry.camera.to_real_camera``, the rule MuPoTS-3D evaluation uses) and ``camera`` records it. Writes are atomic;
batched, with a progress bar.

``--export model.pt`` also writes the estimator as TorchScript (traced), whose outputs equal the eager model's.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lightning_mp3d.atomic import save_figure_atomic, write_text_atomic
from lightning_mp3d.skeleton import JOINTS


def iter_inputs(source: str, image_size: int, mode: str) -> Iterator[dict[str, Any]]:
    """Samples (``image``, ``transform``, ``original_size``, ``key``) of a folder or shard pattern."""
    from lightning_mp3d.datamodules.images import ImageFolderDataset, ImageShardDataset

    if Path(source).is_dir():
        dataset = ImageFolderDataset(source, image_size=image_size, mode=mode)
        yield from (dataset[i] for i in range(len(dataset)))
    else:
        yield from ImageShardDataset(source, image_size=image_size, mode=mode)


def batched(samples: Iterator[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def in_real_camera(poses: torch.Tensor, transforms: torch.Tensor, camera, image_size: int) -> torch.Tensor:
    """Predicted poses (B, K, 15, 3) of the input camera -> the original images' real ``camera`` (CameraIntrinsics).

    ``transforms`` (B, 3) map input px to original px (``original = s * input + o``); ``to_real_camera`` takes the
    inverse direction, ``input = original / s - o / s``.
    """
    from lightning_mp3d.geometry import Intrinsics
    from lightning_mp3d.geometry.camera import to_real_camera

    s, offset = transforms[:, :1], transforms[:, 1:]
    mapping = torch.cat((1.0 / s, -offset / s), 1).to(poses)
    intrinsics = poses.new_tensor(tuple(camera)).expand(len(poses), 4)
    return to_real_camera(poses, mapping, intrinsics, Intrinsics.for_image(image_size))


def people_json(prediction, i: int, transform: torch.Tensor, image_size: int, camera=None) -> dict[str, Any]:
    """The JSON record of image ``i`` of a batch (``camera``: the real CameraIntrinsics the poses are already in)."""
    from lightning_mp3d.datamodules.images import to_original_pixels

    scale, ox, oy = (float(x) for x in transform)
    people = []
    for k in torch.nonzero(prediction.mask[i]).flatten().tolist():
        joints_2d = to_original_pixels(prediction.keypoints[i, k], transform)
        people.append(
            {
                "root_confidence": round(float(prediction.confidence[i, k]), 4),
                "joints_3d_mm": [[round(float(c), 1) for c in j] for j in prediction.poses[i, k]],
                "joints_2d_px": [[round(float(c), 2) for c in j] for j in joints_2d],
            }
        )
    virtual = {"focal_px": image_size * scale, "cx": image_size / 2 * scale + ox, "cy": image_size / 2 * scale + oy}
    return {"joints": list(JOINTS), "camera": virtual if camera is None else camera._asdict(), "people": people}


def export_torchscript(estimator: torch.nn.Module, path: str | Path, image_size: int = 224) -> torch.jit.ScriptModule:
    """Trace E -> H -> NMS -> M to TorchScript; the traced module returns the Prediction fields as a tuple."""
    example = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():  # shape checks on traced tensors are constants of the model, as intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(TupleOutput(estimator), example, check_trace=False)
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    traced.save(str(tmp))
    os.replace(tmp, path)
    return traced


class TupleOutput(torch.nn.Module):
    """Wraps the estimator so tracing sees a plain tuple output."""

    def __init__(self, estimator: torch.nn.Module) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.estimator(images))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mp3d-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="distill/phase1/phase2 checkpoint")
    parser.add_argument("--input", required=True, help="image folder or webdataset shard pattern")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=None, help="root probability threshold")
    parser.add_argument("--fit", choices=("crop", "pad"), default="pad")
    parser.add_argument("--no-png", action="store_true", help="JSON only")
    parser.add_argument("--export", type=Path, default=None, help="also write a TorchScript model here")
    parser.add_argument("--intrinsics", type=Path, default=None, help="JSON fx, fy, cx, cy (or 3x3 K) of the images")
    args = parser.parse_args(argv)
    camera = None
    if args.intrinsics is not None:
        from lightning_mp3d.datamodules.mupots import parse_intrinsics

        camera = parse_intrinsics(json.loads(args.intrinsics.read_text()), str(args.intrinsics))

    from lightning_mp3d.inference import PoseEstimator
    from lightning_mp3d.visualize import plt, prediction_figure

    kwargs = {} if args.threshold is None else {"threshold": args.threshold}
    estimator = PoseEstimator.from_stage_checkpoint(args.checkpoint, **kwargs)
    size = estimator.image_size
    if args.export is not None:
        export_torchscript(estimator, args.export, size)
    count = 0
    with torch.no_grad(), tqdm(desc="predict", unit="img") as bar:
        for batch in batched(iter_inputs(args.input, size, args.fit), args.batch_size):
            images = torch.stack([s["image"] for s in batch])
            prediction = estimator(images)
            if camera is not None:
                transforms = torch.stack([s["transform"] for s in batch])
                prediction = prediction._replace(poses=in_real_camera(prediction.poses, transforms, camera, size))
            for i, sample in enumerate(batch):
                stem = args.out / Path(sample["key"]).with_suffix("")
                record = people_json(prediction, i, sample["transform"], size, camera)
                write_text_atomic(stem.with_suffix(".json"), json.dumps(record, indent=1))
                if not args.no_png:
                    single = type(prediction)(*(f[i : i + 1] for f in prediction))
                    fig = prediction_figure(images[i : i + 1], single)
                    save_figure_atomic(fig, stem.with_suffix(".png"), dpi=90)
                    plt.close(fig)
            count += len(batch)
            bar.update(len(batch))
    print(f"wrote {count} predictions to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
