"""Image shards: rendered D_I sets and real image folders packed as webdataset ``.tar`` files.

``write_image_shards`` renders images of a domain style with their GT tensors; ``folder_to_shards`` packs an image
folder's files (original bytes). ``real_images.ImageShardDataset`` reads both. Shards appear only complete
(``shards.AtomicShardWriter``).
"""

from __future__ import annotations

from pathlib import Path

from lightning_mp3d.datamodules.real_images import list_images
from lightning_mp3d.datamodules.shards import AtomicShardWriter, encode_sample
from lightning_mp3d.imageio import decode_image, encode_image
from lightning_mp3d.synth.batches import GT_KEYS, synthetic_batches


def _shard_writer(out_dir: Path, prefix: str, images_per_shard: int):
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
