"""The three student stages chained through checkpoints: distill -> phase1 -> phase2, each through the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_mp3d.inference import PoseEstimator
from lightning_mp3d.models.aae import load_pose_decoder
from lightning_mp3d.models.teacher import load_teacher
from tests.helpers import changed, make_frozen_checkpoints, run_stage, stage_args, student_state


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Tiny frozen checkpoints, then 2 iterations of each stage, each starting from the previous one's last.ckpt."""
    root = tmp_path_factory.mktemp("chain")
    teacher, aae = make_frozen_checkpoints(root / "frozen")
    out = {"root": root, "teacher": teacher, "aae": aae}
    out["distill"] = run_stage("distill", root, teacher, aae, "--trainer.max_steps=2")
    ckpt = root / "distill" / "checkpoints" / "last.ckpt"
    out["phase1"] = run_stage("phase1", root, teacher, aae, "--trainer.max_steps=3", init_from=ckpt)
    ckpt = root / "phase1" / "checkpoints" / "last.ckpt"
    out["phase2"] = run_stage("phase2", root, teacher, aae, "--trainer.max_steps=2", init_from=ckpt)
    return out


def test_chain_writes_each_stage_checkpoint_without_frozen_parts(chain):
    for stage in ("distill", "phase1", "phase2"):
        ckpt = torch.load(chain["root"] / stage / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["lightning_mp3d_stage"]["stage"] == stage
        keys = set(ckpt["state_dict"])
        assert any(k.startswith("h.") for k in keys)
        assert not any(k.startswith(("teacher.", "scene_decoder.")) for k in keys)
        assert any(k.startswith("g.") for k in keys) == (stage != "distill")
    # global_step counts optimizer steps: distill 1 per batch, phase1 2 (D_syn: recon + adapt) + 1 (D_I: distl)
    assert chain["distill"].trainer.global_step == 2
    assert chain["phase1"].trainer.global_step == 3


def test_phase1_starts_from_distill_h_and_phase2_from_phase1_g_and_h(chain):
    distill = torch.load(chain["root"] / "distill" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    p1 = torch.load(chain["root"] / "phase1" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    p2 = torch.load(chain["root"] / "phase2" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # phase-2 never moves G: G after phase 2 equals G after phase 1
    g_keys = [k for k in p1 if k.startswith("g.")]
    assert g_keys and all(torch.equal(p1[k], p2[k]) for k in g_keys)
    # H kept training from the previous stage (close to it after 1-2 small Adam steps, not a fresh init)
    h_keys = [k for k in p1 if k.startswith("h.") and k.endswith("weight")]
    for a, b in ((distill, p1), (p1, p2)):
        delta = max((a[k] - b[k]).abs().max().item() for k in h_keys)
        assert 0 < delta < 0.05


def test_teacher_and_psi_never_move(chain):
    teacher = load_teacher(chain["teacher"])
    psi = load_pose_decoder(chain["aae"])
    for stage in ("distill", "phase1", "phase2"):
        model = chain[stage].model
        assert not changed(student_state(teacher), student_state(model.teacher))
        assert not changed(student_state(psi), student_state(model.scene_decoder.pose_decoder))
        assert not model.teacher.training and not model.scene_decoder.pose_decoder.training
        assert all(not p.requires_grad for p in model.teacher.parameters())


def test_init_from_wrong_stage_or_missing_file_is_a_clear_error(chain, tmp_path):
    root, teacher, aae = chain["root"], chain["teacher"], chain["aae"]
    wrong = root / "distill" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="'distill' checkpoint, expected 'phase1'"):
        run_stage("phase2", tmp_path, teacher, aae, "--trainer.max_steps=1", init_from=wrong)
    with pytest.raises(FileNotFoundError, match="init_from"):
        run_stage("phase1", tmp_path, teacher, aae, "--trainer.max_steps=1", init_from=tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match="aae_checkpoint"):
        run_stage("distill", tmp_path, teacher, tmp_path / "none.ckpt", "--trainer.max_steps=1")


@pytest.mark.parametrize("stage", ["distill", "phase1", "phase2"])
def test_fast_dev_run_through_console_script(chain, stage, tmp_path):
    """The installed ``lightning`` command, as users run it (with figures on and the W&B logger offline)."""
    init = {"distill": None, "phase1": "distill", "phase2": "phase1"}[stage]
    init = init and chain["root"] / init / "checkpoints" / "last.ckpt"
    args = stage_args(stage, tmp_path, chain["teacher"], chain["aae"], "--trainer.fast_dev_run=true", init_from=init)
    args = [a for a in args if a not in ("--trainer.logger=false", "--model.init_args.val_figures=false")]
    args.append(f"--trainer.logger.init_args.save_dir={tmp_path}")
    exe = Path(sys.executable).with_name("lightning")
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run([str(exe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    pngs = {p.name.split("_step")[0] for p in tmp_path.rglob("*.png")}
    assert {"val_skeleton_3d", "val_overlay_2d"} <= pngs


def test_h_input_maps_reads_an_image_through_the_teachers_maps_and_g(chain):
    """The tiny preset's ``h_input: maps``: H reads G(F(E(I))), in training (``image_input``) and in inference."""
    model = chain["phase2"].model
    assert model.hparams.h_input == "maps"
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = model.teacher.encode(images)
        expected = model.g(torch.cat(model.teacher.decode(v), 1))  # F(v) in m_syn's layout, through G
        torch.testing.assert_close(model.image_input(v), expected)
        estimator = PoseEstimator.from_stage_checkpoint(
            chain["root"] / "phase2" / "checkpoints" / "last.ckpt", channels_last=False
        )
        torch.testing.assert_close(estimator.scene(images), model.h(expected), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(estimator.scene(images), model.h(v))  # not E(I)


def test_h_input_needs_g_and_must_match_the_stage_it_starts_from(chain, tmp_path):
    root, teacher, aae = chain["root"], chain["teacher"], chain["aae"]
    with pytest.raises(ValueError, match="h_input.*'maps' only in a stage with G, not 'distill'"):
        run_stage("distill", tmp_path, teacher, aae, "--trainer.max_steps=1", "--model.init_args.h_input=maps")
    phase1 = root / "phase1" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="trained H on h_input='maps', this stage has h_input='v'"):
        run_stage("phase2", tmp_path, teacher, aae, "--trainer.max_steps=1", "--model.init_args.h_input=v",
                  init_from=phase1)  # fmt: skip
