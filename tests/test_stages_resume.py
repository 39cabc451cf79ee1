"""Resuming a stage from its checkpoint (``--ckpt_path``) continues the same run, data included: a run killed mid-epoch
and resumed ends with bit-identical weights to an uninterrupted run (phase 1 and the AAE stage), and phase 1's LR drop
lands on the same paper iteration as in the paper's alternation of D_syn and D_I batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from lightning_mp3d.cli import cli_main
from lightning_mp3d.systems.phase1 import DISTL, Phase1Alignment
from tests.helpers import CONFIGS, make_frozen_checkpoints, stage_args


class Killed(RuntimeError):
    """What KillAfter raises."""


class KillAfter(Callback):
    """Die (raise) at the first batch after ``step`` optimizer steps, as a killed process would: nothing is saved then,
    so a resumed run starts from the last periodic checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise Killed(f"killed at global step {trainer.global_step}")


def _callbacks(folder: Path, every: int, kill: int | None = None) -> str:
    """``--trainer.callbacks`` replaced by a periodic checkpoint every ``every`` optimizer steps (and a killer)."""
    callbacks = [
        {
            "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(folder), "save_last": True, "save_top_k": 0, "every_n_train_steps": every},
        }
    ]
    if kill is not None:
        callbacks.append({"class_path": f"{__name__}.KillAfter", "init_args": {"step": kill}})
    return f"--trainer.callbacks={json.dumps(callbacks)}"


def _phase1(root: Path, teacher: Path, aae: Path, *extra: str):
    """A small phase-1 run (``stage_args``) whose callbacks are only those ``extra`` gives."""
    args = stage_args("phase1", root, teacher, aae, "--trainer.max_epochs=50", *extra)
    return cli_main([a for a in args if not a.startswith("--trainer.callbacks.")])


def _weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items() if not k.startswith("_metrics")}


def _assert_kill_and_resume_equals_uninterrupted(run, folder: Path, every: int, total: int) -> None:
    """``run(*args)`` builds and fits a stage. Kill after ``every`` optimizer steps, resume to ``total``, compare."""
    whole = _weights(run(f"--trainer.max_steps={total}", _callbacks(folder / "whole", every)))
    with pytest.raises(Killed):
        run(f"--trainer.max_steps={total}", _callbacks(folder / "killed", every, kill=every))
    last = folder / "killed" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == every
    resumed = run(f"--trainer.max_steps={total}", _callbacks(folder / "killed", every), f"--ckpt_path={last}")
    assert resumed.trainer.global_step == total
    got = _weights(resumed)
    assert got.keys() == whole.keys()
    for key, value in whole.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_phase1_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(tmp_path):
    teacher, aae = make_frozen_checkpoints(tmp_path / "frozen")

    def run(*extra: str):  # 2 steps per epoch, 3 optimizer steps per step: killed after 3 steps, mid epoch 1
        return _phase1(tmp_path, teacher, aae, *extra)

    _assert_kill_and_resume_equals_uninterrupted(run, tmp_path / "ckpt", every=9, total=15)


def test_aae_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(tmp_path):
    def run(*extra: str):  # 3 batches per epoch, 3 optimizer steps per batch: killed after 4 batches, mid epoch 1
        args = [
            "fit",
            f"--config={CONFIGS / 'stage_aae.yaml'}",
            f"--config={CONFIGS / 'tiny' / 'stage_aae.yaml'}",
            *(f"--model.init_args.{k}.width=16" for k in ("encoder", "pose_decoder", "discriminator")),
            "--model.init_args.num_figure_poses=0",
            "--data.init_args.batch_size=8",
            "--data.init_args.batches_per_epoch=3",
            "--data.init_args.val_size=16",
            "--data.init_args.val_batch_size=16",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            *extra,
        ]
        return cli_main(args)

    _assert_kill_and_resume_equals_uninterrupted(run, tmp_path / "ckpt", every=12, total=21)


def test_phase1_lr_drop_lands_on_the_same_paper_iteration(tmp_path, monkeypatch):
    """Step k runs paper iterations 2k (D_syn: recon, adapt) and 2k + 1 (D_I: distl); each uses the dropped rate iff
    its iteration is >= the MultiStepLR milestone, as when each iteration was its own batch. A drop at 3 falls inside
    step 1."""
    teacher, aae = make_frozen_checkpoints(tmp_path / "frozen")
    used: list[tuple[int, int, float]] = []  # (step, optimizer, lr it stepped with)
    original = Phase1Alignment.run_optimizer

    def spy(self, index, loss):
        used.append((self.trainer.fit_loop.epoch_loop.batch_progress.total.ready - 1, index,
                     self.optimizers()[index].param_groups[0]["lr"]))  # fmt: skip
        return original(self, index, loss)

    monkeypatch.setattr(Phase1Alignment, "run_optimizer", spy)
    drop, lr, lr_after = 3, 1e-3, 1e-4
    args = (
        "--trainer.max_steps=9",
        f"--model.init_args.optimizer.lr={lr}",
        f"--model.init_args.lr_scheduler.milestones=[{drop}]",
        f"--model.init_args.lr_scheduler.gamma={lr_after / lr}",
        "--model.init_args.g_lr_scale=1.0",  # one rate for G and H: this test is about the schedule
        _callbacks(tmp_path / "ckpt", 9),
    )
    _phase1(tmp_path, teacher, aae, *args)
    assert [(s, i) for s, i, _ in used] == [(s, i) for s in range(3) for i in (0, 2, 1)]  # recon, adapt, distl
    for step, index, value in used:
        iteration = 2 * step + (index == DISTL)
        assert value == (lr_after if iteration >= drop else lr), (step, index, value)
