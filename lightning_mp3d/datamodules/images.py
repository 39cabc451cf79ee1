"""D_I: images for the teacher and the student, synthetic (rendered on the fly or from shards) or real.

Sources
-------
- ``"synthetic"``: whole batches rendered on the fly by ``synth.batches.synthetic_batch`` in a domain style,
  seeded per (seed, epoch, rank, worker) so DDP ranks and DataLoader workers see different images.
- webdataset shards (a glob or brace pattern of ``.tar`` files): rendered sets written by
  ``image_shards.write_image_shards`` (``<key>.png`` or ``.jpg`` + ``<key>.<name>.npy``, the GT tensors) or real
  images converted by ``image_shards.folder_to_shards`` (``<key>.jpg``/``.png`` with the original bytes).
- an image folder (JPEG/PNG files, searched recursively, sorted).

Real images (``real_images.py``) are fitted to 224 x 224 by ``imageio.fit_image`` (``mode="crop"`` or ``"pad"``).
Batches of real images carry ``image (B, 3, 224, 224)``, ``letterbox (B, 3)`` (``imageio.Letterbox``:
``input_px = scale * original_px + offset``), ``original_size (B, 2)`` (height, width) and ``key`` (list of str);
rendered shards add their GT tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, IterableDataset
from typing_extensions import override

from lightning_mp3d.datamodules import on_device
from lightning_mp3d.datamodules.real_images import ImageFolderDataset, ImageShardDataset
from lightning_mp3d.datamodules.streams import EpochDataLoader, SeededBatchStream
from lightning_mp3d.synth.batches import synthetic_batch, synthetic_batches
from lightning_mp3d.synth.styles import get_style

# ----------------------------------------------------------------------------------------------------------------
# rendered datasets


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
        self.device = on_device.check_device(device)

    @override
    def make(self, generator: torch.Generator) -> dict[str, Any]:
        if on_device.defers(self.device):
            return on_device.deferred_batch(generator)
        return synthetic_batch(self.batch_size, self.style, generator, image_size=self.image_size)

    def materialize(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
        """The batch of a deferred ``batch`` (``{"batch_seed": s}``) rendered on ``device``."""
        device = torch.device(device)
        generator = on_device.seeded_generator(batch[on_device.SEED_KEY], device)
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
        mode: "crop" or "pad" for real images (see ``imageio.fit_image``).
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
        self.device = on_device.check_device(device)
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

    @override
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

    @override
    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        if isinstance(self.train_set, SyntheticImageDataset):
            return EpochDataLoader(self.train_set, batch_size=None, num_workers=self.num_workers)
        shuffle = isinstance(self.train_set, ImageFolderDataset)
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers, drop_last=True
        )

    @override
    def val_dataloader(self) -> list[DataLoader]:
        if not self.val_sets:
            self.setup("validate")
        return [DataLoader(ds, batch_size=self.batch_size, num_workers=self.num_workers) for ds in self.val_sets]

    @override
    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Render a deferred training batch (its seed) on the generation device; other batches pass unchanged."""
        if not on_device.is_deferred(batch):
            return batch
        return self.train_set.materialize(batch, on_device.generation_device(self.device, self.trainer))
