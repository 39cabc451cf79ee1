"""D_I: images for the teacher and the student, synthetic (rendered on the fly or from shards) or real.

Sources
-------
- ``"synthetic"``: whole batches rendered on the fly by ``synth.batches.synthetic_batch`` in a domain style,
  seeded per (seed, epoch, rank, worker) so DDP ranks and DataLoader workers see different images.
- webdataset shards (a glob or brace pattern of ``.tar`` files): rendered sets written by ``write_image_shards``
  (``<key>.png`` or ``.jpg`` + ``<key>.<name>.npy``, the GT tensors) or real images converted by
  ``folder_to_shards`` (``<key>.jpg``/``.png`` with the original bytes).
- an image folder (JPEG/PNG files, searched recursively, sorted).

Real images are resized and cropped (``mode="crop"``: shorter side to 224, centre crop) or padded
(``mode="pad"``: longer side to 224, centred, zero padding) to 224 x 224. Each sample records
``transform (3,) = (scale, offset_x, offset_y)`` with ``original_px = scale * input_px + offset`` (continuous
pixel coordinates, (u, v)) and ``original_size (2,) = (height, width)``, so predictions map back with
``to_original_pixels``. Batches of real images carry ``image (B, 3, 224, 224)``, ``transform (B, 3)``,
``original_size (B, 2)`` and ``key`` (list of str); rendered shards add their GT tensors.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lightning_mp3d.datamodules.on_device import (
    SEED_KEY,
    check_device,
    deferred_batch,
    defers,
    generation_device,
    is_deferred,
    seeded_generator,
)
from lightning_mp3d.datamodules.shards import decode_sample, encode_sample, expand_shards
from lightning_mp3d.datamodules.streams import EpochDataLoader, SeededBatchStream, rank_and_world
from lightning_mp3d.synth.batches import GT_KEYS, synthetic_batch, synthetic_batches
from lightning_mp3d.synth.styles import get_style

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


# ----------------------------------------------------------------------------------------------------------------
# single images


class FittedImage(NamedTuple):
    """An image brought to the network's input size.

    Attributes:
        image: (3, S, S) float RGB in [0, 1].
        transform: (3,) (scale, offset_x, offset_y): ``original_px = scale * input_px + offset``.
        original_size: (2,) (height, width) of the original image, pixels.
    """

    image: torch.Tensor
    transform: torch.Tensor
    original_size: torch.Tensor


MAX_ASPECT_RATIO = 16  # longer side / shorter side that fit_image accepts
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb warning limit; larger images are refused


def decode_image(data: bytes, name: str) -> torch.Tensor:
    """JPEG/PNG bytes -> (3, H, W) float RGB in [0, 1], upright (the EXIF orientation applied); 16-bit grayscale is
    scaled by its bit depth. A ValueError naming ``name`` if unreadable or over ``MAX_IMAGE_PIXELS``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{im.width}x{im.height} pixels is over the limit of {MAX_IMAGE_PIXELS} (a decompression bomb?)"
                )
            array = _rgb_unit(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {name}: {err}") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def _rgb_unit(im: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; integer grayscale deeper than 8 bit ("I;16", "I") divided by 65535, not clipped."""
    if im.mode.startswith("I"):
        gray = np.asarray(im, dtype=np.float32) / 65535.0  # PNG's deepest grayscale is 16 bit; Pillow reads it as I
        return np.repeat(gray.clip(0.0, 1.0)[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def encode_image(image: torch.Tensor, image_format: str = "png", quality: int = 95) -> bytes:
    """(3, H, W) float in [0, 1] -> PNG or JPEG bytes (8 bit)."""
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    array = (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(array).save(buf, format="PNG")
    else:
        Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def fit_image(image: torch.Tensor, size: int = 224, mode: str = "crop") -> FittedImage:
    """Resize (bilinear, antialiased) and centre-crop or pad an image to ``size`` x ``size``.

    Args:
        image: (3, H, W) float.
        size: output side, pixels.
        mode: "crop" (shorter side to ``size``, centre crop) or "pad" (longer side to ``size``, centred, zeros).

    Returns:
        FittedImage(image (3, size, size), transform (3,), original_size (2,)).
    """
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    _, h, w = image.shape
    if max(h, w) > MAX_ASPECT_RATIO * min(h, w):
        raise ValueError(f"image {w}x{h}: aspect ratio over {MAX_ASPECT_RATIO}:1 is not supported; crop it first")
    side = min(h, w) if mode == "crop" else max(h, w)
    scale = side / size  # original pixels per input pixel, the same along both axes
    # one scale factor for both axes (not two rounded sizes): input px u is exactly original px scale * (u + left)
    factor = size / side
    if math.floor(side * factor) < size:  # the fitted side must come out at exactly `size` px, not one short
        factor = math.nextafter(factor, math.inf)
    resized = torch.nn.functional.interpolate(
        image[None], scale_factor=factor, mode="bilinear", align_corners=False, antialias=True,
        recompute_scale_factor=False,
    )[0]  # fmt: skip
    new_h, new_w = resized.shape[-2:]
    top, left = (new_h - size) // 2, (new_w - size) // 2  # negative when padding
    out = image.new_zeros(3, size, size)
    src_t, src_l = max(top, 0), max(left, 0)
    dst_t, dst_l = max(-top, 0), max(-left, 0)
    ch, cw = min(size - dst_t, new_h - src_t), min(size - dst_l, new_w - src_l)
    out[:, dst_t : dst_t + ch, dst_l : dst_l + cw] = resized[:, src_t : src_t + ch, src_l : src_l + cw]
    # input px u maps to resized px u + left, i.e. original px (u + left) * scale
    transform = torch.tensor([scale, left * scale, top * scale], dtype=torch.float32)
    return FittedImage(out.clamp(0, 1), transform, torch.tensor([h, w], dtype=torch.float32))


def to_original_pixels(points: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """Map input-image pixels back to the original image.

    Args:
        points: (..., N, 2) pixels (u, v) in the network input.
        transform: (..., 3) (scale, offset_x, offset_y) as recorded per sample.

    Returns:
        (..., N, 2) pixels in the original image.
    """
    return points * transform[..., None, :1] + transform[..., None, 1:]


# ----------------------------------------------------------------------------------------------------------------
# datasets


class SyntheticImageDataset(SeededBatchStream):
    """``batches`` rendered batches per epoch and rank of a domain style, split among DataLoader workers.

    Batch ``index`` of an epoch is rendered from ``batch_seed(seed, split, rank, epoch, index)``
    (``datamodules/streams.py``), so it does not depend on the number of workers. Use with dsyn's ``EpochDataLoader``
    (``batch_size=None``), which advances the epoch and resumes mid-epoch: each item is already a batch from
    ``synthetic_batch``. ``device`` other than "cpu": iteration yields deferred batches (their seeds) and
    ``materialize`` renders them on a device (``datamodules/on_device.py``).
    """

    def __init__(
        self,
        batch_size: int,
        batches: int,
        style: str = "target",
        seed: int = 0,
        image_size: int = 224,
        split: int = 0,
        rank: int | None = None,
        device: str = "cpu",
    ):
        super().__init__(batches, seed, split=split, rank=rank)
        get_style(style)  # validate early
        self.batch_size, self.style, self.image_size = batch_size, style, image_size
        self.device = check_device(device)

    def make(self, generator: torch.Generator) -> dict[str, Any]:
        if defers(self.device):
            return deferred_batch(generator)
        return synthetic_batch(self.batch_size, self.style, generator, image_size=self.image_size)

    def materialize(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
        """The batch of a deferred ``batch`` (``{"batch_seed": s}``) rendered on ``device``."""
        device = torch.device(device)
        generator = seeded_generator(batch[SEED_KEY], device)
        return synthetic_batch(self.batch_size, self.style, generator, image_size=self.image_size, device=device)


def fixed_synthetic_set(num_images: int, style: str, seed: int, batch_size: int = 16) -> list[dict[str, torch.Tensor]]:
    """A fixed, seed-determined list of single-image samples (for validation sets)."""
    samples = []
    for batch in synthetic_batches(num_images, style, seed, batch_size):
        samples.extend({k: v[i] for k, v in batch.items()} for i in range(batch["image"].shape[0]))
    return samples


class _ListDataset(Dataset):
    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def list_images(folder: str | Path) -> list[Path]:
    """JPEG/PNG files under ``folder`` (recursive, sorted); a ValueError if there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"image folder {root} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
    return files


class ImageFolderDataset(Dataset):
    """Real images from a folder, fitted to ``image_size``: items ``image``, ``transform``, ``original_size``, ``key``.

    The key is the file's path relative to the folder.
    """

    def __init__(self, folder: str | Path, image_size: int = 224, mode: str = "crop") -> None:
        self.root = Path(folder)
        self.files = list_images(folder)
        self.image_size, self.mode = image_size, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.files[i]
        fitted = fit_image(decode_image(path.read_bytes(), str(path)), self.image_size, self.mode)
        return {**fitted._asdict(), "key": str(path.relative_to(self.root))}


def decode_shard_sample(sample: dict[str, Any], url: str, image_size: int, mode: str) -> dict[str, Any]:
    key = sample["__key__"]
    ext = next((e for e in ("png", "jpg", "jpeg") if e in sample), None)
    if ext is None:
        raise ValueError(f"shard {url}: sample {key!r} has no png/jpg image (fields {sorted(sample)})")
    fitted = fit_image(decode_image(sample[ext], f"{url}:{key}.{ext}"), image_size, mode)
    out: dict[str, Any] = {**fitted._asdict(), "key": key}
    tensors = {k: v for k, v in sample.items() if k.endswith(".npy")}
    if tensors:
        out.update(decode_sample({"__key__": key, "__url__": url, **tensors}))
    return out


def iter_shard(url: str, image_size: int = 224, mode: str = "crop") -> Iterator[dict[str, Any]]:
    """Samples of one webdataset shard, decoded and fitted; a ValueError naming the shard if it is corrupt."""
    import webdataset as wds

    if not Path(url).is_file():
        raise ValueError(f"shard {url} does not exist")
    try:
        for sample in wds.WebDataset([url], shardshuffle=False, empty_check=False):
            yield decode_shard_sample(sample, url, image_size, mode)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - tarfile/IO errors from inside webdataset
        raise ValueError(f"corrupt shard {url}: {type(err).__name__}: {err}") from None


class ImageShardDataset(IterableDataset):
    """Samples from webdataset image shards, shards split over (rank, worker) round-robin.

    Every (rank, worker) needs at least one shard; write as many shards as ranks x workers.
    """

    def __init__(self, urls: str | Sequence[str], image_size: int = 224, mode: str = "crop") -> None:
        super().__init__()
        self.urls = expand_shards(urls)
        self.image_size, self.mode = image_size, mode

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank, world = rank_and_world()
        slot, slots = rank * workers + worker, world * workers
        for url in self.urls[slot::slots]:
            yield from iter_shard(url, self.image_size, self.mode)


# ----------------------------------------------------------------------------------------------------------------
# writers


def _shard_writer(out_dir: Path, prefix: str, images_per_shard: int):
    from lightning_mp3d.datamodules.shards import AtomicShardWriter

    out_dir.mkdir(parents=True, exist_ok=True)
    return AtomicShardWriter(str(out_dir / f"{prefix}-%06d.tar"), maxcount=images_per_shard, verbose=0)


def write_image_shards(
    out_dir: str | Path,
    num_images: int,
    style: str = "target",
    *,
    seed: int = 0,
    batch_size: int = 32,
    images_per_shard: int = 1000,
    image_format: str = "png",
    progress: bool = True,
) -> list[Path]:
    """Render ``num_images`` images of a style into webdataset shards ``<out_dir>/<style>-%06d.tar``.

    Each sample: ``<key>.png`` (or ``.jpg``) and the GT tensors of ``synthetic_batch`` as ``<key>.<name>.npy``
    (``shards.encode_sample``; one person axis of ``max_people`` slots). Keys are ``<style>_<index:08d>``.

    Returns:
        The shard paths, sorted.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    index = 0
    with (
        _shard_writer(out, style, images_per_shard) as sink,
        tqdm(total=num_images, desc=f"render {style}", unit="img", disable=not progress) as bar,
    ):
        for batch in synthetic_batches(num_images, style, seed, batch_size):
            for i in range(batch["image"].shape[0]):
                sample = encode_sample(f"{style}_{index:08d}", {k: batch[k][i] for k in GT_KEYS})
                sample[image_format] = encode_image(batch["image"][i], image_format)
                sink.write(sample)
                index += 1
            bar.update(batch["image"].shape[0])
    return sorted(out.glob(f"{style}-*.tar"))


def folder_to_shards(
    folder: str | Path,
    out_dir: str | Path,
    *,
    prefix: str = "images",
    images_per_shard: int = 1000,
    progress: bool = True,
) -> list[Path]:
    """Pack an image folder's JPEG/PNG files (original bytes, checked readable) into webdataset shards.

    Keys are the relative paths without extension, ``/`` and ``.`` replaced by ``_`` (webdataset splits keys at
    the first dot).

    Returns:
        The shard paths ``<out_dir>/<prefix>-%06d.tar``, sorted.
    """
    from tqdm.auto import tqdm

    root = Path(folder)
    files = list_images(root)
    out = Path(out_dir)
    seen: set[str] = set()
    with _shard_writer(out, prefix, images_per_shard) as sink:
        for path in tqdm(files, desc="pack images", unit="img", disable=not progress):
            data = path.read_bytes()
            decode_image(data, str(path))  # fail here, naming the file, rather than at training time
            key = str(path.relative_to(root).with_suffix("")).replace("/", "_").replace(".", "_")
            if key in seen:
                raise ValueError(f"image {path} gives the duplicate shard key {key!r}")
            seen.add(key)
            ext = "png" if path.suffix.lower() == ".png" else "jpg"
            sink.write({"__key__": key, ext: data})
    return sorted(out.glob(f"{prefix}-*.tar"))


# ----------------------------------------------------------------------------------------------------------------
# datamodule


class ImageDataModule(LightningDataModule):
    """D_I for the teacher (stage 0, ``style="source"``) and the student stages (``style="target"``).

    Args:
        style: domain style of on-the-fly training renders ("source" or "target").
        train: "synthetic", a shard pattern (glob/brace, ``.tar``) or an image folder.
        batch_size: images per batch.
        batches_per_epoch: synthetic batches per epoch and rank (on-the-fly source only).
        seed: base seed; training streams use (seed, epoch, rank, worker), validation sets fixed seeds.
        num_workers: DataLoader workers.
        val_styles: one held-out rendered validation set per style, in this order (``dataloader_idx``).
        val_size: images per validation set.
        image_size: network input side, pixels.
        mode: "crop" or "pad" for real images (see ``fit_image``).
        device: where on-the-fly training renders are made: "cpu" (by the DataLoader), "auto" (the training device,
            in ``on_after_batch_transfer``) or a torch device (``datamodules/on_device.py``). The fixed validation
            sets are rendered once on the CPU.
    """

    def __init__(
        self,
        style: str = "target",
        train: str = "synthetic",
        batch_size: int = 8,
        batches_per_epoch: int = 100,
        seed: int = 0,
        num_workers: int = 0,
        val_styles: Sequence[str] = ("source", "target"),
        val_size: int = 64,
        image_size: int = 224,
        mode: str = "crop",
        device: str = "cpu",
    ) -> None:
        super().__init__()
        self.device = check_device(device)
        for s in (style, *val_styles):
            get_style(s)
        self.save_hyperparameters()
        self.style, self.train, self.batch_size = style, train, batch_size
        self.batches_per_epoch, self.seed, self.num_workers = batches_per_epoch, seed, num_workers
        self.val_styles, self.val_size, self.image_size, self.mode = tuple(val_styles), val_size, image_size, mode
        self.train_set: Dataset | IterableDataset | None = None
        self.val_sets: list[Dataset] = []

    def _train_kind(self) -> str:
        if self.train == "synthetic":
            return "synthetic"
        if self.train.endswith(".tar") or "*" in self.train or "{" in self.train:
            return "shards"
        if Path(self.train).is_dir():
            return "folder"
        raise ValueError(f"train must be 'synthetic', a .tar shard pattern or an image folder, got {self.train!r}")

    def setup(self, stage: str | None = None) -> None:
        kind = self._train_kind()
        if kind == "synthetic":
            self.train_set = SyntheticImageDataset(
                self.batch_size, self.batches_per_epoch, self.style, self.seed, self.image_size, device=self.device
            )
        elif kind == "shards":
            self.train_set = ImageShardDataset(self.train, self.image_size, self.mode)
        else:
            self.train_set = ImageFolderDataset(self.train, self.image_size, self.mode)
            if len(self.train_set) < self.batch_size:  # drop_last would leave no batch: nothing would train
                raise ValueError(
                    f"image folder {self.train} holds {len(self.train_set)} images, fewer than batch_size="
                    f"{self.batch_size}: no training batch; add images or lower data.init_args.batch_size"
                )
        if not self.val_sets and self.val_size > 0:
            # validation seeds are far from the training streams' (seed, epoch, rank, worker) tuples
            self.val_sets = [
                _ListDataset(fixed_synthetic_set(self.val_size, s, seed=10_000_019 + 7919 * i + self.seed))
                for i, s in enumerate(self.val_styles)
            ]

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        if isinstance(self.train_set, SyntheticImageDataset):
            return EpochDataLoader(self.train_set, batch_size=None, num_workers=self.num_workers)
        shuffle = isinstance(self.train_set, ImageFolderDataset)
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers, drop_last=True
        )

    def val_dataloader(self) -> list[DataLoader]:
        if not self.val_sets:
            self.setup("validate")
        return [DataLoader(ds, batch_size=self.batch_size, num_workers=self.num_workers) for ds in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Render a deferred training batch (its seed) on the generation device; other batches pass unchanged."""
        if not is_deferred(batch):
            return batch
        return self.train_set.materialize(batch, generation_device(self.device, self.trainer))
