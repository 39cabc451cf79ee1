"""D_syn and D_I on alternate iterations, as one training loader (phase 1 and phase 2).

Why not a dict ``CombinedLoader``: it loads a batch of *each* source every step and the step uses one, so half the
data work is thrown away (LIGHTNING_NOTES). ``AlternatingLoader`` instead yields one source per step, chosen by the
iteration's parity (even = D_syn, odd = D_I), and tags the batch with ``source``. Lightning sees one plain iterable
train loader (it wraps it in its own CombinedLoader as it does any loader).

DDP: both inner sources are rank-aware streams (``DSynDataset`` / ``SyntheticImageDataset`` seed by rank), so ranks
draw different samples; the epoch length is fixed (``batches_per_epoch``), so every rank runs the same number of
steps. An inner map-style loader (e.g. an image folder) gets a ``DistributedSampler`` here, because Lightning does not
look inside the wrapper. Inner loaders restart (with a new epoch number for their streams) when they run out.

Resume: the loader is stateful (``state_dict``/``load_state_dict``, which Lightning saves in ``last.ckpt``), so a
resumed run continues at the saved position of the epoch with the same parity.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

SOURCES = ("syn", "image")


def _distributed(loader: Iterable, rank: int, world_size: int) -> Iterable:
    """Give a map-style DataLoader a DistributedSampler (Lightning cannot see inside our wrapper)."""
    if world_size <= 1 or not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size, rank=rank, shuffle=True, drop_last=True)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        drop_last=loader.drop_last,
    )


class AlternatingLoader:
    """Yield ``length`` batches per epoch, batch ``i`` from ``loaders[order[i % len(order)]]``, tagged ``source``.

    Args:
        loaders: name -> iterable of batch dicts.
        length: batches per epoch (even, so every epoch starts with ``order[0]``).
        order: source names in iteration order.
    """

    def __init__(self, loaders: dict[str, Iterable], length: int, order: tuple[str, ...] = SOURCES) -> None:
        missing = [name for name in order if name not in loaders]
        if missing:
            raise ValueError(f"order names {missing} that are not among the loaders {sorted(loaders)}")
        if length < 1 or length % len(order):
            raise ValueError(f"length must be a positive multiple of {len(order)}, got {length}")
        self.loaders, self.length, self.order = loaders, length, order
        self.position = 0
        self._resume_from = 0
        self._restarts = dict.fromkeys(order, 0)

    def __len__(self) -> int:
        return self.length

    def _restart(self, name: str) -> Iterator:
        loader = self.loaders[name]
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch") and not hasattr(loader, "_epochs_started"):
            dataset.set_epoch(self._restarts[name])  # fresh samples each time the stream restarts
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self._restarts[name])
        self._restarts[name] += 1
        return iter(loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        iters: dict[str, Iterator] = {}
        start, self._resume_from = self._resume_from, 0
        for i in range(start, self.length):
            name = self.order[i % len(self.order)]
            if name not in iters:
                iters[name] = self._restart(name)
            try:
                batch = next(iters[name])
            except StopIteration:
                iters[name] = self._restart(name)
                batch = next(iters[name])
            self.position = i + 1
            yield {**batch, "source": name}
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """Position in the current epoch and how often each stream restarted."""
        return {"position": self.position % self.length, "restarts": dict(self._restarts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the saved position (same parity) with streams that do not repeat old epochs."""
        self._resume_from = int(state.get("position", 0))
        self._restarts.update(state.get("restarts", {}))


class CrossModalDataModule(LightningDataModule):
    """Alternating D_syn / D_I training batches; validation on D_I's held-out target-domain images with GT.

    The two inner datamodules are built lazily from their init arguments (at the first ``prepare_data``/``setup``),
    not injected as objects: LightningCLI instantiates nested ``class_path`` datamodules inside the outer one's
    hyper-parameter context, which would give them the outer module's ``hparams``.

    Args:
        syn: init arguments of ``datamodules.dsyn.DSynDataModule``.
        images: init arguments of ``datamodules.images.ImageDataModule`` (``style: target``, ``val_styles: [target]``);
            its validation loaders are this module's.
        batches_per_epoch: training iterations per epoch (even; half D_syn, half D_I).
    """

    def __init__(
        self, syn: dict[str, Any] | None = None, images: dict[str, Any] | None = None, batches_per_epoch: int = 1000
    ) -> None:
        super().__init__()
        if batches_per_epoch < 2 or batches_per_epoch % 2:
            raise ValueError(f"batches_per_epoch must be even and >= 2, got {batches_per_epoch}")
        self.save_hyperparameters()
        self.syn_kwargs = dict(syn or {})
        self.images_kwargs = {"style": "target", "val_styles": ["target"], **(images or {})}
        self.batches_per_epoch = batches_per_epoch
        self.syn: LightningDataModule | None = None
        self.images: LightningDataModule | None = None
        self.train_loader: AlternatingLoader | None = None

    def _inner(self) -> tuple[LightningDataModule, LightningDataModule]:
        if self.syn is None:
            from lightning_mp3d.datamodules.dsyn import DSynDataModule
            from lightning_mp3d.datamodules.images import ImageDataModule

            self.syn = DSynDataModule(**self.syn_kwargs)
            self.images = ImageDataModule(**self.images_kwargs)
        for dm in (self.syn, self.images):
            dm.trainer = self.trainer
        return self.syn, self.images

    def prepare_data(self) -> None:
        for dm in self._inner():
            dm.prepare_data()

    def setup(self, stage: str) -> None:
        for dm in self._inner():
            dm.setup(stage)

    def train_dataloader(self) -> AlternatingLoader:
        syn, images = self._inner()
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        loaders = {
            "syn": _distributed(syn.train_dataloader(), rank, world),
            "image": _distributed(images.train_dataloader(), rank, world),
        }
        self.train_loader = AlternatingLoader(loaders, self.batches_per_epoch)
        return self.train_loader

    def val_dataloader(self) -> Any:
        return self._inner()[1].val_dataloader()
