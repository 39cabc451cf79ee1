"""Resuming phase 1 from its last.ckpt (``--ckpt_path``) continues the same stage: step counter, all three optimizers'
Adam states, the iteration-based LR schedule and the D_syn / D_I alternation."""

import torch

from tests.test_stages_fixtures import make_frozen_checkpoints, run_stage


def _adam_steps(ckpt: dict) -> list[float]:
    return [float(next(iter(o["state"].values()))["step"]) for o in ckpt["optimizer_states"]]


def test_phase1_resume_from_last_ckpt_continues(tmp_path):
    teacher, aae = make_frozen_checkpoints(tmp_path / "frozen")
    drop = "--model.init_args.lr_drop_iteration=3"
    # max_steps, not the preset's epoch count, must end both runs
    epochs = "--trainer.max_epochs=50"
    first = run_stage("phase1", tmp_path, teacher, aae, "--trainer.max_steps=3", drop, epochs)
    last = tmp_path / "phase1" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 3
    assert _adam_steps(ckpt) == [1, 1, 1]  # batch 0: D_syn (recon, adapt), batch 1: D_I (distl)
    h_saved = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("h.")}
    assert first.model.optimizers()[0].param_groups[0]["lr"] == 1e-3  # 2 iterations < drop at 3

    seen: list[str] = []
    resumed_args = ("--trainer.max_steps=9", drop, epochs, f"--ckpt_path={last}")
    from lightning_mp3d.systems.phase1 import Phase1Alignment

    original = Phase1Alignment.training_step

    def spy(self, batch, batch_idx):
        if not seen:  # the first resumed step starts from the saved weights
            for key, value in h_saved.items():
                torch.testing.assert_close(self.state_dict()[key], value, rtol=0, atol=0)
        seen.append(batch["source"])
        return original(self, batch, batch_idx)

    Phase1Alignment.training_step = spy
    try:
        resumed = run_stage("phase1", tmp_path, teacher, aae, *resumed_args)
    finally:
        Phase1Alignment.training_step = original
    assert resumed.trainer.global_step == 9
    assert seen == ["syn", "image", "syn", "image"]  # alternation continues with D_syn at iteration 2
    final = torch.load(last, weights_only=False)
    assert _adam_steps(final) == [3, 3, 3]  # restored states, not fresh optimizers
    assert resumed.model.optimizers()[0].param_groups[0]["lr"] == 1e-4  # 6 iterations >= drop: lr_after
