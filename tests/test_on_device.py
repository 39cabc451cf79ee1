"""Synthetic batches made on the generation device (``datamodules/on_device.py``): the deferred path equals the
DataLoader path on the CPU bit for bit, resumes like it, and the ``device`` argument reaches the generators."""

import pytest
import torch
from pytorch_lightning import LightningModule, Trainer

import lightning_mp3d.datamodules.images as images_module
from lightning_mp3d.datamodules.cross_modal import CrossModalDataModule
from lightning_mp3d.datamodules.dsyn import BATCH_KEYS, DSynDataModule, DSynDataset
from lightning_mp3d.datamodules.images import ImageDataModule, SyntheticImageDataset
from lightning_mp3d.datamodules.on_device import SEED_KEY
from lightning_mp3d.datamodules.streams import EpochDataLoader

SMALL = {"max_people": 3}


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_deferred_dsyn_batches_made_on_the_cpu_equal_the_loader_path():
    old = DSynDataset(3, 4, seed=7, scene_kwargs=SMALL)
    new = DSynDataset(3, 4, seed=7, scene_kwargs=SMALL, device="auto")
    for epoch in (0, 1):
        old.set_epoch(epoch)
        new.set_epoch(epoch)
        seeds = list(new)
        assert all(set(s) == {SEED_KEY} and isinstance(s[SEED_KEY], int) for s in seeds)  # nothing to transfer
        for ref, seed in zip(old, seeds, strict=True):
            assert _same(ref, new.materialize(seed, "cpu"))
    assert set(new.batch(1)) == set(BATCH_KEYS) and _same(new.batch(1), old.batch(1))


def test_deferred_rendered_images_made_on_the_cpu_equal_the_loader_path():
    old = SyntheticImageDataset(2, 2, "target", seed=5, rank=0)
    new = SyntheticImageDataset(2, 2, "target", seed=5, rank=0, device="auto")
    for ref, seed in zip(old, new, strict=True):
        assert _same(ref, new.materialize(seed, torch.device("cpu")))


def test_resumed_deferred_loader_makes_the_batches_of_an_uninterrupted_run():
    loader = EpochDataLoader(DSynDataset(2, 3, seed=1, scene_kwargs=SMALL, device="auto"), batch_size=None)
    full = [b[SEED_KEY] for _ in range(2) for b in loader]  # 2 epochs
    first = EpochDataLoader(DSynDataset(2, 3, seed=1, scene_kwargs=SMALL, device="auto"), batch_size=None)
    it = iter(first)
    drawn = [next(it)[SEED_KEY] for _ in range(2)]
    resumed = EpochDataLoader(DSynDataset(2, 3, seed=1, scene_kwargs=SMALL, device="auto"), batch_size=None)
    resumed.load_state_dict(first.state_dict())
    drawn += [b[SEED_KEY] for _ in range(2) for b in resumed]  # the rest of epoch 0, then epoch 1
    assert drawn == full and len(set(full)) == 6


def test_dsyn_device_argument_reaches_the_generators():
    dm = DSynDataModule(batch_size=2, train_batches=2, val_batches=1, device="meta", **SMALL)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = dm.on_after_batch_transfer(next(iter(loader)), 0)
        assert set(batch) == set(BATCH_KEYS) and all(v.device.type == "meta" for v in batch.values())
        assert batch["maps"].shape == (2, 43, 28, 28) and batch["poses"].shape == (2, 3, 15, 3)
    with pytest.raises(ValueError, match="device must be"):
        DSynDataModule(device="nowhere")


def test_image_and_cross_modal_device_argument_reaches_the_renderer(monkeypatch):
    seen = []

    def fake_synthetic_batch(batch_size, style, generator, *, image_size, device=None):
        seen.append((device, None if generator is None else generator.device))
        return {"image": torch.empty(batch_size, 3, image_size, image_size, device=device)}

    monkeypatch.setattr(images_module, "synthetic_batch", fake_synthetic_batch)
    dm = CrossModalDataModule(syn={"batch_size": 2, **SMALL}, images={"batch_size": 2, "val_size": 0},
                              batches_per_epoch=2, device="meta")  # fmt: skip
    dm.setup("fit")
    assert dm.syn.hparams.device == "meta" and dm.images.device == "meta"
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader()))[0], 0)
    assert batch["syn"]["maps"].device.type == "meta" and batch["image"]["image"].device.type == "meta"
    assert seen == [(torch.device("meta"), None)]
    images = ImageDataModule(batch_size=2, batches_per_epoch=1, val_size=0, device="cpu")
    images.setup("fit")
    assert images.on_after_batch_transfer(next(iter(images.train_dataloader())), 0)["image"].shape[0] == 2
    assert seen[-1] == (None, torch.device("cpu"))  # device "cpu": made by the loader, as before
    with pytest.raises(ValueError, match="set it once"):
        CrossModalDataModule(syn={"device": "cpu"}, device="auto")


class _Consumer(LightningModule):
    """Records the batches training_step receives."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[dict] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch)
        return (self.w - batch["maps"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_hands_training_step_batches_made_on_its_device():
    kwargs = dict(batch_size=2, train_batches=2, val_batches=0, seed=4, **SMALL)
    model = _Consumer()
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=DSynDataModule(device="auto", **kwargs))
    ref = DSynDataModule(**kwargs)
    ref.setup("fit")
    expected = list(ref.train_dataloader())
    assert len(model.seen) == 2 and all(_same(a, b) for a, b in zip(model.seen, expected, strict=True))
