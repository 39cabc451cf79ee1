"""``mp3d-predict``: run the trained estimator on a folder of images or webdataset shards.

    mp3d-predict --checkpoint runs/phase2/checkpoints/last.ckpt --input photos/ --out predictions/

Per image: ``<out>/<name>.json`` with each person's camera-centric 3D joints (mm), 2D joints in the ORIGINAL image's
pixels and the root confidence, plus ``<key>.png`` (2D skeletons on the image, 3D skeletons in a plot). Images are
fitted to 224 px (``--fit crop|pad``); the 3D joints live in the camera of that 224-px input (f = 224 px), which in
the original image is a camera with focal ``224 / s`` px and principal point ``(112 - o) / s`` (the image's
``imageio.Letterbox``, ``input_px = s * original_px + o``): the JSON
records it as ``camera``. With ``--intrinsics cam.json`` (``{"fx", "fy", "cx", "cy"}`` or a 3x3 ``K`` of the
original images, one camera for all inputs) the 3D joints are re-expressed in that real camera instead
(``geometry.camera.to_real_camera``, the rule MuPoTS-3D evaluation uses) and ``camera`` records it. Writes are atomic;
batched, with a progress bar.

Output names: ``<name>`` is the image's path relative to the input folder without its extension (``a.jpg`` and
``a.png`` in one folder keep their extensions, ``a.jpg.json`` and ``a.png.json``, instead of overwriting one
another), or a shard sample's key. Every output path stays inside ``--out``: a key that is absolute or holds ``..``
is refused. An image that cannot be read is reported and skipped; the others are still predicted, and the command
exits 1 at the end with the list of failures.

``--refine`` (with a refine-stage checkpoint) runs the two-stage refinement H' (paper Fig. 6): stage 1 detects, then all
detected people of a batch are cropped and re-estimated in one H' call (``inference.refine_people``): slower, by person.

``--export model.pt`` also writes the estimator as TorchScript (traced), whose outputs equal the eager model's (either
mode).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import torch
from jsonargparse import ArgumentParser
from tqdm import tqdm

from lightning_mp3d.atomic import atomic_path, save_figure_atomic, write_text_atomic
from lightning_mp3d.commands import FLAG, command_parser
from lightning_mp3d.geometry import Intrinsics
from lightning_mp3d.imageio import Letterbox
from lightning_mp3d.skeleton import JOINTS


def iter_inputs(source: str, image_size: int, mode: str) -> Iterator[tuple[str, dict[str, Any] | ValueError]]:
    """``(name, sample)`` per input of a folder or shard pattern, or ``(name, error)`` for one that cannot be read.

    Samples hold ``image``, ``letterbox``, ``original_size`` and ``key``, the output name (``output_names``).
    """
    import webdataset as wds

    from lightning_mp3d.datamodules.real_images import ImageFolderDataset, decode_shard_sample
    from lightning_mp3d.datamodules.shards import expand_shards

    if Path(source).is_dir():
        dataset = ImageFolderDataset(source, image_size=image_size, mode=mode)
        names = output_names([str(path.relative_to(dataset.root)) for path in dataset.files])
        for i, path in enumerate(dataset.files):
            try:
                sample = dataset[i]
            except ValueError as err:
                yield str(path), err
                continue
            yield str(path), {**sample, "key": names[sample["key"]]}
        return
    for url in expand_shards(source):
        try:
            for raw in wds.WebDataset([url], shardshuffle=False, empty_check=False):
                name = f"{url}:{raw.get('__key__')}"
                try:
                    yield name, decode_shard_sample(raw, url, image_size, mode)
                except ValueError as err:
                    yield name, err
        except Exception as err:  # noqa: BLE001 - tarfile/IO errors from inside webdataset: the rest of this shard
            yield url, ValueError(f"corrupt shard {url}: {type(err).__name__}: {err}")


def output_names(keys: list[str]) -> dict[str, str]:
    """Output name of each folder key: without its extension, unless another key has the same stem (then with it)."""
    stems = {key: str(PurePosixPath(key).with_suffix("")) for key in keys}
    count = Counter(stems.values())
    return {key: stem if count[stem] == 1 else key for key, stem in stems.items()}


def confined(out: Path, name: str) -> Path:
    """``out / name`` for a name that comes from data; ValueError if it would land outside ``out``."""
    rel = PurePosixPath(name.replace("\\", "/"))
    target = (out / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or not target.is_relative_to(out.resolve()):
        raise ValueError(f"sample key {name!r} would write outside --out {str(out)!r}; refused")
    return out / rel


def batched(samples: Iterator[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Lists of ``batch_size`` consecutive samples; the last one may be shorter."""
    batch: list[dict[str, Any]] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def in_real_camera(poses: torch.Tensor, letterboxes: torch.Tensor, camera: Intrinsics, image_size: int) -> torch.Tensor:
    """Predicted poses (B, K, 15, 3) of the input camera -> the original images' real ``camera``.

    ``letterboxes`` (B, 3): each image's ``imageio.Letterbox`` (``input_px = s * original_px + o``).
    """
    from lightning_mp3d.geometry.camera import to_real_camera

    intrinsics = poses.new_tensor(tuple(camera)).expand(len(poses), 4)
    return to_real_camera(poses, letterboxes.to(poses), intrinsics, Intrinsics.for_image(image_size))


def batch_json(prediction, letterboxes: torch.Tensor, image_size: int, camera=None) -> list[dict[str, Any]]:
    """The JSON records of a batch, from one host transfer (``inference.prediction_records``).

    Args:
        prediction: the batch's Prediction.
        letterboxes: (B, 3) ``imageio.Letterbox`` per image.
        image_size: the side of the square input images, pixels (their virtual camera is ``Intrinsics.for_image``).
        camera: the real ``geometry.Intrinsics`` the poses are already in (None: each image's virtual camera).
    """
    from lightning_mp3d.inference import prediction_records

    keypoints = Letterbox.from_tensor(letterboxes.to(prediction.keypoints)).to_original(prediction.keypoints)
    people = prediction_records(prediction._replace(keypoints=keypoints))
    records = []
    for box, people_i in zip(letterboxes.double().tolist(), people, strict=True):
        seen = Letterbox(*box).intrinsics_to_original(Intrinsics.for_image(image_size))  # the input camera
        virtual = {"focal_px": seen.fx, "cx": seen.cx, "cy": seen.cy}
        records.append(
            {"joints": list(JOINTS), "camera": virtual if camera is None else camera._asdict(), "people": people_i}
        )
    return records


def people_json(prediction, i: int, letterbox: torch.Tensor, image_size: int, camera=None) -> dict[str, Any]:
    """The JSON record of image ``i`` of a batch (``batch_json`` of that one image)."""
    single = type(prediction)(*(f[i : i + 1] for f in prediction))
    return batch_json(single, letterbox[None], image_size, camera)[0]


def export_torchscript(estimator: torch.nn.Module, path: str | Path, image_size: int = 224) -> torch.jit.ScriptModule:
    """Trace E -> H -> NMS -> M to TorchScript; the traced module returns the Prediction fields as a tuple."""
    example = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():  # shape checks on traced tensors are constants of the model, as intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(TupleOutput(estimator), example, check_trace=False)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return traced


class TupleOutput(torch.nn.Module):
    """Wraps the estimator so tracing sees a plain tuple output."""

    def __init__(self, estimator: torch.nn.Module) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The estimator's Prediction on ``images`` as a tuple of its fields."""
        return tuple(self.estimator(images))


def build_parser() -> ArgumentParser:
    """The ``mp3d-predict`` parser (jsonargparse: ``--config`` files and ``--print_config``, argparse's flags)."""
    parser = command_parser("mp3d-predict", __doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=str, required=True, help="distill/phase1/phase2/refine checkpoint")
    parser.add_argument(
        "--teacher-checkpoint",
        type=str | None,
        default=None,
        help="teacher checkpoint (default: the one the stage recorded)",
    )
    parser.add_argument(
        "--aae-checkpoint", type=str | None, default=None, help="AAE checkpoint (default: the one the stage recorded)"
    )
    parser.add_argument("--input", type=str, required=True, help="image folder or webdataset shard pattern")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threshold", type=float | None, default=None, help="root probability threshold")
    parser.add_argument("--fit", type=Literal["crop", "pad"], default="pad")
    parser.add_argument("--no-png", **FLAG, help="JSON only")
    parser.add_argument("--refine", **FLAG, help="two-stage refinement H' (a refine checkpoint)")
    parser.add_argument("--export", type=Path | None, default=None, help="also write a TorchScript model here")
    parser.add_argument(
        "--intrinsics", type=Path | None, default=None, help="JSON fx, fy, cx, cy (or 3x3 K) of the images"
    )
    parser.add_argument("--no-channels-last", **FLAG, help="E and H in NCHW (channels_last is faster)")
    parser.add_argument("--bf16", **FLAG, help="E and H under bfloat16 autocast (M stays float32)")
    parser.add_argument("--compile", **FLAG, help="torch.compile NMS + M (about a minute once)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``mp3d-predict``: every readable input's JSON (and PNG); returns 1 when some input failed, else 0."""
    args = build_parser().parse_args(argv)
    camera = None
    if args.intrinsics is not None:
        from lightning_mp3d.datamodules.mupots import parse_intrinsics

        camera = parse_intrinsics(json.loads(args.intrinsics.read_text()), str(args.intrinsics))

    from lightning_mp3d.inference import PoseEstimator
    from lightning_mp3d.visualize import plt, prediction_figure

    kwargs = {"refine": args.refine} | ({} if args.threshold is None else {"threshold": args.threshold})
    kwargs |= {"channels_last": not args.no_channels_last, "compile_decoder": args.compile}
    kwargs |= {"amp_dtype": torch.bfloat16} if args.bf16 else {}
    estimator = PoseEstimator.from_stage_checkpoint(
        args.checkpoint, teacher_checkpoint=args.teacher_checkpoint, aae_checkpoint=args.aae_checkpoint, **kwargs
    )
    size = estimator.image_size
    if args.export is not None:
        export_torchscript(estimator, args.export, size)
    count, failures, seen = 0, [], set()

    def readable() -> Iterator[dict[str, Any]]:
        """The inputs that can be read and written, each under a name no other input has; the rest to failures."""
        for name, sample in iter_inputs(args.input, size, args.fit):
            try:
                if isinstance(sample, Exception):
                    raise sample
                stem = confined(args.out, sample["key"])
                if stem in seen:
                    raise ValueError(f"duplicate sample key {sample['key']!r}; its prediction would overwrite another")
            except ValueError as err:
                failures.append(f"{name}: {err}")
                print(f"skipped {failures[-1]}", flush=True)
                continue
            seen.add(stem)
            yield {**sample, "stem": stem}

    with torch.no_grad(), tqdm(desc="predict", unit="img") as bar:
        for batch in batched(readable(), args.batch_size):
            images = torch.stack([s["image"] for s in batch])
            prediction = estimator(images)
            letterboxes = torch.stack([s["letterbox"] for s in batch])
            if camera is not None:
                prediction = prediction._replace(poses=in_real_camera(prediction.poses, letterboxes, camera, size))
            for i, (sample, record) in enumerate(zip(batch, batch_json(prediction, letterboxes, size, camera))):
                stem = sample["stem"]
                write_text_atomic(stem.with_name(stem.name + ".json"), json.dumps(record, indent=1))
                if not args.no_png:
                    single = type(prediction)(*(f[i : i + 1] for f in prediction))
                    fig = prediction_figure(images[i : i + 1], single)
                    save_figure_atomic(fig, stem.with_name(stem.name + ".png"), dpi=90)
                    plt.close(fig)
            count += len(batch)
            bar.update(len(batch))
    print(f"wrote {count} predictions to {args.out}")
    if failures:
        print(f"{len(failures)} input(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
