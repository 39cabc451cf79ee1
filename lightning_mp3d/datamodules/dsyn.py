"""D_syn data: on-the-fly batches of synthetic multi-person scenes with their m_syn maps, and shards of them.

A batch is a dict (B scenes, P = max_people, J = 15)::

    maps (B, 43, G, G) float   m_syn: 15 heatmaps + 14 x 2 PAF channels on the 28 x 28 grid (synth/maps.py)
    poses (B, P, J, 3)         camera-centric millimetres        canonical (B, P, J, 3) canonical millimetres
    rotation (B, P, 6)         sin/cos of (yaw, pitch, roll)     roots_px (B, P, 2) root pixel (u, v)
    depth (B, P) millimetres   joints_2d (B, P, J, 2) pixels     root_cells (B, P, 2) long (col, row), 14-grid
    mask (B, P) bool

Seeding (``datamodules/streams.py``): batch ``i`` of epoch ``e`` on rank ``r`` is generated from its own
``torch.Generator`` seeded by ``batch_seed(seed, split, r, e, i)`` (split 0 = train, 1 = val), so workers never
duplicate a batch, ranks differ, a fixed seed reproduces every batch whatever the number of workers, and each epoch
draws new scenes. The epoch advances each time the training dataloader is iterated (``EpochDataLoader``, which also
resumes mid-epoch from a checkpoint); validation always uses epoch 0 (a fixed set).

Device (``device=``, ``datamodules/on_device.py``): "cpu" makes batches in the DataLoader; "auto" (the training
device) or a device makes each batch there, from the same per-batch seed, in the datamodule's
``on_after_batch_transfer``, so a GPU renders its own m_syn and the loader only hands over seeds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_mp3d.datamodules import on_device
from lightning_mp3d.datamodules.shards import tensor_shard_pipeline, write_tensor_shards
from lightning_mp3d.datamodules.streams import EpochDataLoader, SeededBatchStream
from lightning_mp3d.synth.maps import render_maps
from lightning_mp3d.synth.scenes import compose_scenes

BATCH_KEYS = ("maps", "poses", "canonical", "rotation", "roots_px", "depth", "joints_2d", "root_cells", "mask")
_MAP_KEYS = ("grid_size", "sigma_px", "paf_width_px")


def make_dsyn_batch(
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    scene_kwargs: dict[str, Any] | None = None,
    map_kwargs: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """One D_syn batch in a single vectorised call: compose_scenes then render_maps, on ``device``.

    Args:
        batch_size: B scenes.
        generator: torch.Generator on ``device`` (None: the global RNG).
        scene_kwargs: keyword arguments of ``synth.compose_scenes`` (people counts, ranges, pose bank, ...).
        map_kwargs: ``grid_size`` (28), ``sigma_px``, ``paf_width_px`` of ``synth.render_maps``.
        device: where the batch is drawn and rendered (None: ``scene_kwargs["device"]``, default the CPU).

    Returns:
        The batch dict of the module header.
    """
    scene_kwargs = dict(scene_kwargs or {})
    map_kwargs = dict(map_kwargs or {})
    unknown = set(map_kwargs) - set(_MAP_KEYS)
    if unknown:
        raise ValueError(f"unknown map_kwargs {sorted(unknown)}; expected some of {_MAP_KEYS}")
    if device is not None:
        scene_kwargs["device"] = device
    scenes = compose_scenes(batch_size, generator=generator, **scene_kwargs)
    image_size = scene_kwargs.get("image_size", 224)
    maps = render_maps(scenes.joints_2d, scenes.mask, image_size=image_size, **map_kwargs)
    return {"maps": maps, **scenes._asdict()}


class DSynDataset(SeededBatchStream):
    """Batches of D_syn generated on the fly (one vectorised call per batch), seeded per (seed, rank, epoch, batch).

    Args:
        batch_size: scenes per batch.
        num_batches: batches per epoch on this rank (shared among dataloader workers).
        seed: base seed.
        rank, world_size: this process's DDP rank (explicit: Lightning gives IterableDatasets no sampler).
        split: 0 for training, 1 for validation (different streams from one seed).
        scene_kwargs, map_kwargs: see ``make_dsyn_batch``.
        device: "cpu" makes batches when iterated; otherwise iteration yields deferred batches (their seeds) and
            ``materialize`` makes them on the device (``datamodules/on_device.py``).
    """

    def __init__(
        self,
        batch_size: int = 8,
        num_batches: int = 100,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
        split: int = 0,
        scene_kwargs: dict[str, Any] | None = None,
        map_kwargs: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(num_batches, seed, split=split, rank=rank)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.batch_size, self.world_size = batch_size, world_size
        self.scene_kwargs, self.map_kwargs = dict(scene_kwargs or {}), dict(map_kwargs or {})
        self.device = on_device.check_device(device)

    @override
    def make(self, generator: torch.Generator) -> dict[str, Any]:
        if on_device.defers(self.device):
            return on_device.deferred_batch(generator)
        return make_dsyn_batch(self.batch_size, generator, scene_kwargs=self.scene_kwargs, map_kwargs=self.map_kwargs)

    def materialize(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
        """The batch of a deferred ``batch`` (``{"batch_seed": s}``) made on ``device``."""
        device = torch.device(device)
        return make_dsyn_batch(
            self.batch_size,
            on_device.seeded_generator(batch[on_device.SEED_KEY], device),
            scene_kwargs=self.scene_kwargs,
            map_kwargs=self.map_kwargs,
            device=device,
        )

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Batch ``index`` of the current epoch on this rank (deterministic; made on ``device`` when deferred)."""
        made = self.make(self.generator(index))
        return self.materialize(made, on_device.generation_device(self.device)) if on_device.is_deferred(made) else made


def load_pose_bank(path: str | os.PathLike) -> torch.Tensor:
    """D_syn's pose bank, read by the AAE's pose file reader so both stages see the same normalised poses.

    The reader is ``datamodules.poses.load_pose_file`` (``.npz`` with ``poses`` and ``joint_order``, or a bare
    ``.npy``/``.pt`` array); the poses are canonical, (N, 15, 3) float32 millimetres, with the fixed bone lengths.
    """
    from lightning_mp3d.datamodules.poses import load_pose_file

    return load_pose_file(path)


def write_dsyn_shards(
    out_dir: str | os.PathLike,
    num_scenes: int,
    *,
    seed: int = 0,
    samples_per_shard: int = 1000,
    generate_batch_size: int = 256,
    prefix: str = "dsyn",
    progress: bool = True,
    scene_kwargs: dict[str, Any] | None = None,
    map_kwargs: dict[str, Any] | None = None,
) -> list[str]:
    """Generate ``num_scenes`` D_syn scenes and write them as webdataset shards (one scene per sample).

    The scenes are those of ``DSynDataset(generate_batch_size, seed=seed)`` (rank 0, epoch 0, batches 0, 1, ...),
    concatenated and cut at ``num_scenes``. Atomic writes and a tqdm bar (``datamodules/shards.py``).

    Returns:
        The shard paths, ``<out_dir>/<prefix>-000000.tar``, ...
    """
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    dataset = DSynDataset(
        generate_batch_size,
        math.ceil(num_scenes / generate_batch_size),
        seed,
        scene_kwargs=scene_kwargs,
        map_kwargs=map_kwargs,
    )

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        left = num_scenes
        for batch in dataset:
            yield {k: v[:left] for k, v in batch.items()}
            left -= generate_batch_size

    return write_tensor_shards(
        out_dir, batches(), samples_per_shard=samples_per_shard, prefix=prefix, total=num_scenes, progress=progress
    )


class DSynDataModule(LightningDataModule):
    """D_syn batches for the stages that read m_syn and P_syn (phase 1 and 2).

    Args:
        batch_size: scenes per batch (paper: 8).
        seed: base seed of the on-the-fly streams.
        num_workers: dataloader workers.
        train_batches: batches per training epoch on each rank.
        val_batches: batches of the fixed validation set on each rank.
        min_people, max_people, pose_range_scale, yaw_range, pitch_range, roll_range, depth_range, image_size,
            margin_px: forwarded to ``synth.compose_scenes``.
        pose_bank: optional pose file to draw people from instead of artificial sampling (e.g. MoCap poses): the
            AAE's format (``.npz`` with ``poses`` (N, J, 3) mm and ``joint_order``, or a bare ``.npy``/``.pt``),
            normalised to the fixed bone lengths like the AAE's poses (``load_pose_bank``).
        map_grid_size, sigma_px, paf_width_px: forwarded to ``synth.render_maps``.
        shards: optional training shards (folder, glob, brace pattern or list) written by ``write_dsyn_shards``;
            read with webdataset instead of generating on the fly.
        val_shards: the same for validation.
        shuffle_buffer: example shuffle buffer when reading shards (0: off); shard order is shuffled per epoch.
        device: where generated batches are made: "cpu" (by the DataLoader, in its workers), "auto" (the training
            device, in ``on_after_batch_transfer``) or a torch device (``datamodules/on_device.py``). Shards are read
            by the DataLoader whatever the device.
    """

    def __init__(
        self,
        batch_size: int = 8,
        seed: int = 0,
        num_workers: int = 0,
        train_batches: int = 1000,
        val_batches: int = 8,
        min_people: int = 1,
        max_people: int = 4,
        pose_range_scale: float = 1.0,
        yaw_range: tuple[float, float] = (-math.pi, math.pi),
        pitch_range: tuple[float, float] = (-0.25, 0.25),
        roll_range: tuple[float, float] = (-0.15, 0.15),
        depth_range: tuple[float, float] = (3000.0, 8000.0),
        image_size: int = 224,
        margin_px: float = 16.0,
        pose_bank: str | None = None,
        map_grid_size: int = 28,
        sigma_px: float = 7.0,
        paf_width_px: float = 8.0,
        shards: str | None = None,
        val_shards: str | None = None,
        shuffle_buffer: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        on_device.check_device(device)
        self.save_hyperparameters()
        self.scene_kwargs: dict[str, Any] = dict(
            min_people=min_people,
            max_people=max_people,
            pose_range_scale=pose_range_scale,
            yaw_range=tuple(yaw_range),
            pitch_range=tuple(pitch_range),
            roll_range=tuple(roll_range),
            depth_range=tuple(depth_range),
            image_size=image_size,
            margin_px=margin_px,
        )
        self.map_kwargs: dict[str, Any] = dict(grid_size=map_grid_size, sigma_px=sigma_px, paf_width_px=paf_width_px)
        compose_scenes(1, generator=torch.Generator().manual_seed(0), **self.scene_kwargs)  # validate settings now

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        """Load the pose bank (if any) and fix this process's rank."""
        self.rank, self.world_size = self._rank()
        if self.hparams.pose_bank:
            self.scene_kwargs["poses"] = load_pose_bank(self.hparams.pose_bank)

    def _generated(self, split: int, num_batches: int) -> DSynDataset:
        rank, world = getattr(self, "rank", 0), getattr(self, "world_size", 1)
        return DSynDataset(
            self.hparams.batch_size,
            num_batches,
            self.hparams.seed,
            rank=rank,
            world_size=world,
            split=split,
            scene_kwargs=self.scene_kwargs,
            map_kwargs=self.map_kwargs,
            device=self.hparams.device,
        )

    def _from_shards(self, shards: str, num_batches: int, shuffle: bool):
        rank, world = getattr(self, "rank", 0), getattr(self, "world_size", 1)
        pipeline = tensor_shard_pipeline(
            shards,
            rank=rank,
            world_size=world,
            shardshuffle=shuffle,
            shuffle_buffer=self.hparams.shuffle_buffer if shuffle else 0,
            seed=self.hparams.seed,
            batch_size=self.hparams.batch_size,
            partial=False,
            keys=BATCH_KEYS,
        )
        # Repeat the shards and cut every rank's (and worker's) epoch at the same length, so DDP ranks stay in step.
        per_worker = math.ceil(num_batches / max(1, self.hparams.num_workers))
        return pipeline.repeat(nepochs=10**9).with_epoch(per_worker).with_length(num_batches, silent=True)

    def _loader(self, dataset, train: bool) -> DataLoader:
        cls = EpochDataLoader if train and isinstance(dataset, SeededBatchStream) else DataLoader
        return cls(dataset, batch_size=None, num_workers=self.hparams.num_workers, persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        """Training batches: shards if given, else the on-the-fly stream (new scenes each epoch)."""
        if self.hparams.shards:
            return self._loader(self._from_shards(self.hparams.shards, self.hparams.train_batches, True), True)
        return self._loader(self._generated(0, self.hparams.train_batches), True)

    def val_dataloader(self) -> DataLoader:
        """A fixed validation set: ``val_shards`` if given, else ``val_batches`` generated batches (epoch 0)."""
        if self.hparams.val_shards:
            return self._loader(self._from_shards(self.hparams.val_shards, self.hparams.val_batches, False), False)
        return self._loader(self._generated(1, self.hparams.val_batches), False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Make a deferred batch (its seed) on the generation device; other batches pass unchanged."""
        if not on_device.is_deferred(batch):
            return batch
        device = on_device.generation_device(self.hparams.device, self.trainer)
        if getattr(self, "_device_scene_kwargs", (None,))[0] != device:  # the pose bank moves once, not per batch
            kwargs = dict(self.scene_kwargs)
            if kwargs.get("poses") is not None:
                kwargs["poses"] = kwargs["poses"].to(device)
            self._device_scene_kwargs = (device, kwargs)
        generated = DSynDataset(self.hparams.batch_size, 0, scene_kwargs=self._device_scene_kwargs[1],
                                map_kwargs=self.map_kwargs, device=str(device))  # fmt: skip
        return generated.materialize(batch, device)
