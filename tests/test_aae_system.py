"""AAEPretraining under a real Trainer (CPU, in process): optimizers, checkpoint -> frozen Ψ, resume."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_mp3d.datamodules.poses import PoseDataModule
from lightning_mp3d.models.aae import load_pose_decoder
from lightning_mp3d.systems.aae import AAEPretraining


def adam(lr: float) -> functools.partial:
    """An optimizer callable, as LightningCLI builds from ``class_path: torch.optim.Adam, init_args: {lr: ...}``."""
    return functools.partial(torch.optim.Adam, lr=lr)


SMALL = dict(
    encoder={"width": 32, "depth": 1},
    pose_decoder={"width": 32, "depth": 1},
    discriminator={"width": 32, "depth": 1},
    optimizer=adam(1e-4),
)


def _fit(tmp_path, model, max_steps, callbacks=(), ckpt_path=None, checkpoint_every=None) -> Trainer:
    dm = PoseDataModule(batch_size=8, batches_per_epoch=4, val_size=16, val_batch_size=16)
    cbs = list(callbacks)
    if checkpoint_every:
        cbs.append(
            ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, every_n_train_steps=checkpoint_every)
        )
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=bool(checkpoint_every),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=cbs,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return trainer


def test_each_optimizer_holds_exactly_its_own_module():
    model = AAEPretraining(**SMALL)
    optimizers = model.configure_optimizers()
    for opt, module in zip(optimizers, (model.encoder, model.pose_decoder, model.discriminator), strict=True):
        held = {id(p) for group in opt.param_groups for p in group["params"]}
        assert held == {id(p) for p in module.parameters()}
        assert opt.param_groups[0]["lr"] == 1e-4
    optimizers = AAEPretraining(**{**SMALL, "disc_optimizer": adam(1e-3)}).configure_optimizers()
    assert [o.param_groups[0]["lr"] for o in optimizers] == [1e-4, 1e-4, 1e-3]


def test_encoder_ignores_adversarial_loss_and_decoder_does_not(tmp_path):
    """One batch with adv_weight 0 and 100, same seed: Φ (L_cyc only) and Disc end identical, Ψ differs."""

    def one_batch(adv_weight: float) -> AAEPretraining:
        seed_everything(0)
        model = AAEPretraining(adv_weight=adv_weight, num_figure_poses=0, **SMALL)
        _fit(tmp_path, model, max_steps=3)
        return model

    calm, adversarial = one_batch(0.0), one_batch(100.0)
    seed_everything(0)
    start = AAEPretraining(**SMALL)  # the same initial weights as both runs
    for name in ("encoder", "pose_decoder", "discriminator"):
        moved = any(
            not torch.equal(a, b)
            for a, b in zip(getattr(start, name).parameters(), getattr(calm, name).parameters(), strict=True)
        )
        assert moved, f"{name} was not updated"
    for a, b in zip(calm.encoder.parameters(), adversarial.encoder.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(calm.discriminator.parameters(), adversarial.discriminator.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b) for a, b in zip(calm.pose_decoder.parameters(), adversarial.pose_decoder.parameters())
    )


def test_global_step_counts_three_optimizer_steps_per_batch(tmp_path):
    trainer = _fit(tmp_path, AAEPretraining(num_figure_poses=0, **SMALL), max_steps=6)
    assert trainer.global_step == 6 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2


@pytest.mark.parametrize(
    "options",
    [
        {},
        dict(
            bounded_decoder=True,
            joint_limit={"weight": 1.0},
            discriminator={**SMALL["discriminator"], "spectral_norm": True},
            disc_optimizer=adam(1e-3),
        ),
    ],
    ids=["paper", "bounded_limit_sn"],
)
def test_checkpoint_gives_frozen_decoder_with_bit_identical_outputs(tmp_path, options):
    seed_everything(1)
    model = AAEPretraining(num_figure_poses=2, **{**SMALL, **options})
    _fit(tmp_path, model, max_steps=12, checkpoint_every=6)  # one epoch: validation writes the figure
    decoder = load_pose_decoder(tmp_path / "checkpoints" / "last.ckpt")
    assert not decoder.training and not any(p.requires_grad for p in decoder.parameters())
    phi = torch.rand(64, 32) * 2 - 1
    model.eval()
    with torch.no_grad():
        assert torch.equal(decoder(phi), model.pose_decoder(phi))
    assert list((tmp_path).rglob("val_prior_poses_step*.png"))


class _Crash(Callback):
    def __init__(self, at_batch: int) -> None:
        self.at_batch = at_batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.fit_loop.epoch_loop.batch_progress.total.completed == self.at_batch:
            raise RuntimeError("simulated kill")


class _RecordStart(Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.optimizers = copy.deepcopy([opt.state_dict() for opt in trainer.optimizers])  # Adam mutates in place
        self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}


def _assert_same(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def test_resume_from_last_ckpt_after_a_kill_restores_step_and_optimizer_states(tmp_path):
    seed_everything(2)
    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit(
            tmp_path,
            AAEPretraining(num_figure_poses=0, **SMALL),
            max_steps=30,
            callbacks=[_Crash(5)],
            checkpoint_every=6,
        )
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 12  # saved after batch 4; killed before batch 6
    record = _RecordStart()
    trainer = _fit(
        tmp_path,
        AAEPretraining(num_figure_poses=0, **SMALL),
        max_steps=18,
        callbacks=[record],
        ckpt_path=last,
        checkpoint_every=6,
    )
    assert record.step == 12
    _assert_same(record.optimizers, saved["optimizer_states"], "optimizer_states")
    _assert_same(record.weights, saved["state_dict"], "state_dict")
    assert trainer.global_step == 18
