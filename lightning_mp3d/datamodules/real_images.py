"""Real images for D_I and ``mp3d-predict``: an image folder or webdataset shards, each image fitted to the input.

Folders: JPEG/PNG files, searched recursively, sorted; the key is the path relative to the folder. Shards (a glob or
brace pattern of ``.tar`` files): ``<key>.png`` or ``.jpg`` (written by ``image_shards.write_image_shards`` with the
GT tensors as ``<key>.<name>.npy``, or by ``image_shards.folder_to_shards`` with the original bytes).

Images are decoded and fitted by ``imageio`` (``mode="crop"``: shorter side to 224, centre crop; ``mode="pad"``:
longer side to 224, centred on zeros). Each sample records ``letterbox (3,) = (scale, offset_x, offset_y)`` with
``input_px = scale * original_px + offset`` (``imageio.Letterbox``; ``to_original`` maps predictions back) and
``original_size (2,) = (height, width)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

from lightning_mp3d.datamodules.shards import decode_sample, expand_shards
from lightning_mp3d.datamodules.streams import rank_and_world
from lightning_mp3d.imageio import decode_image, fit_image, read_fitted

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


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
    """Real images from a folder, fitted to ``image_size``: items ``image``, ``letterbox``, ``original_size``, ``key``.

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
        fitted = read_fitted(path, self.image_size, self.mode)
        return {**fitted._asdict(), "key": str(path.relative_to(self.root))}


def decode_shard_sample(sample: dict[str, Any], url: str, image_size: int, mode: str) -> dict[str, Any]:
    """One raw webdataset sample of shard ``url`` -> the fitted image's fields, ``key`` and any ``.npy`` tensors.

    A ValueError naming the shard and key if the sample holds no png/jpg image.
    """
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
