"""D_syn and D_I together, as one training loader of phase 1 and phase 2: ``CombinedLoader({"syn", "image"})``.

Each training batch is ``{"syn": <D_syn batch>, "image": <D_I batch>}``; the stage's ``training_step`` runs the D_syn
pathway on ``batch["syn"]`` and then the D_I pathway on ``batch["image"]``, each with its own optimizers. That is the
paper's "batches of D_syn and D_I in alternate iterations": one Lightning step = two paper iterations, and every
loaded batch is used.

Mode ``min_size``: an epoch ends when the shorter loader does, so no batch is drawn and dropped and no stream is
cycled mid-epoch. Both on-the-fly streams are ``batches_per_epoch`` long (set here, once, for both); a finite real
image set shorter than that ends the epoch after one pass over it.

DDP: the on-the-fly streams seed by rank (``datamodules/streams.py``); a map-style inner loader (an image folder)
gets Lightning's ``DistributedSampler``, which Lightning injects into each inner ``DataLoader`` of a
``CombinedLoader``. Every rank runs the same number of steps (the epoch length is fixed).

Device: ``device`` (set here, once, for both streams; ``datamodules/on_device.py``) "cpu" renders both in the
DataLoader; "auto" makes both batches on the training device in ``on_after_batch_transfer`` (each inner module makes
its own part of ``{"syn", "image"}``).

Config: ``syn`` and ``images`` are typed (``DSynOptions``, ``ImageOptions``: frozen dataclasses of the inner modules'
init arguments, made from their signatures, so each argument and default is written once, in the inner module), so a
preset overlay that sets ``syn: {num_workers: 0}`` changes that key and keeps the others, and a misspelt key fails
when the config is parsed.

Resume: the on-the-fly inner loaders are stateful (``EpochDataLoader``); Lightning stores their (epoch, position) in
the checkpoint's loop state, so a resumed run continues with the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import CombinedLoader
from typing_extensions import override

from lightning_mp3d.datamodules.dsyn import DSynDataModule
from lightning_mp3d.datamodules.images import ImageDataModule
from lightning_mp3d.options import init_options, option_kwargs

MODE = "min_size"
# the inner modules' epoch-length arguments, set from batches_per_epoch
LENGTH_KEYS = {"syn": "train_batches", "images": "batches_per_epoch"}
SET_HERE = ("device",)  # set once for both inner modules, by this module's argument of the same name

DSynOptions = init_options(DSynDataModule, "DSynOptions", __name__, (LENGTH_KEYS["syn"], *SET_HERE))
ImageOptions = init_options(
    ImageDataModule,
    "ImageOptions",
    __name__,
    (LENGTH_KEYS["images"], *SET_HERE),
    {"style": "target", "val_styles": ("target",)},
)

DEFAULT_SYN, DEFAULT_IMAGES = DSynOptions(), ImageOptions()  # frozen: safe to share as defaults


class CrossModalDataModule(LightningDataModule):
    """Paired D_syn / D_I training batches; validation on D_I's held-out target-domain images with GT.

    The two inner datamodules are built lazily from their init arguments (at the first ``prepare_data``/``setup``),
    not injected as objects: LightningCLI instantiates nested ``class_path`` datamodules inside the outer one's
    hyper-parameter context, which would give them the outer module's ``hparams``.

    Args:
        syn: init arguments of ``datamodules.dsyn.DSynDataModule`` (without ``train_batches`` and ``device``), as
            ``DSynOptions`` (or, from Python, a dict of some of them).
        images: init arguments of ``datamodules.images.ImageDataModule`` (defaults ``style: target``,
            ``val_styles: [target]``; without ``batches_per_epoch`` and ``device``), as ``ImageOptions`` (or a dict);
            its validation loaders are this module's.
        batches_per_epoch: training steps per epoch, each one D_syn batch and one D_I batch (two paper iterations).
        device: where both on-the-fly streams are generated: "cpu" (the DataLoader), "auto" (the training device) or
            a torch device.
    """

    def __init__(
        self,
        syn: DSynOptions = DEFAULT_SYN,
        images: ImageOptions = DEFAULT_IMAGES,
        batches_per_epoch: int = 500,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        if batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        inner = {
            "syn": option_kwargs(syn),
            "images": {"style": "target", "val_styles": ["target"], **option_kwargs(images)},
        }
        for name, key in LENGTH_KEYS.items():
            if inner[name].setdefault(key, batches_per_epoch) != batches_per_epoch:
                raise ValueError(
                    f"{name}.{key}={inner[name][key]} differs from batches_per_epoch={batches_per_epoch}: set the "
                    f"epoch length once, as batches_per_epoch (steps, each one D_syn and one D_I batch)"
                )
            if inner[name].setdefault("device", device) != device:
                raise ValueError(f"{name}.device={inner[name]['device']!r} differs from device={device!r}: set it once")
        self.save_hyperparameters()
        for name in ("syn", "images"):  # plain dicts (as under LightningCLI), which weights-only checkpoints can hold
            self.hparams[name] = option_kwargs(self.hparams[name])
        self.syn_kwargs, self.images_kwargs = inner["syn"], inner["images"]
        self.batches_per_epoch = batches_per_epoch
        self.syn: LightningDataModule | None = None
        self.images: LightningDataModule | None = None

    def _inner(self) -> tuple[LightningDataModule, LightningDataModule]:
        if self.syn is None:
            self.syn = DSynDataModule(**self.syn_kwargs)
            self.images = ImageDataModule(**self.images_kwargs)
        for dm in (self.syn, self.images):
            dm.trainer = self.trainer
        return self.syn, self.images

    @override
    def prepare_data(self) -> None:
        for dm in self._inner():
            dm.prepare_data()

    @override
    def setup(self, stage: str) -> None:
        for dm in self._inner():
            dm.setup(stage)

    @override
    def train_dataloader(self) -> CombinedLoader:
        syn, images = self._inner()
        return CombinedLoader({"syn": syn.train_dataloader(), "image": images.train_dataloader()}, mode=MODE)

    @override
    def val_dataloader(self) -> Any:
        return self._inner()[1].val_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Each inner module makes its deferred part of a training batch on the device; validation passes through."""
        syn, images = self._inner()
        if isinstance(batch, dict) and set(batch) == {"syn", "image"}:
            return {
                "syn": syn.on_after_batch_transfer(batch["syn"], dataloader_idx),
                "image": images.on_after_batch_transfer(batch["image"], dataloader_idx),
            }
        return images.on_after_batch_transfer(batch, dataloader_idx)
