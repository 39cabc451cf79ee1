"""Faults a real run meets: a stage killed mid-run (SIGKILL), a pipeline killed or stopped while its stage trains, two
pipelines on one workdir, a checkpoint rewritten behind a stamp's back, and a run that diverges to NaN.

Process-level faults run the real ``mp3d-pipeline`` and ``lightning fit`` as subprocesses on a very small AAE stage.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from lightning_mp3d import pipeline
from lightning_mp3d.callbacks.finite import NonFiniteError
from lightning_mp3d.cli import cli_main
from tests.helpers import make_frozen_checkpoints, run_pipeline, run_stage

ROOT = Path(__file__).resolve().parents[1]
SMALL_AAE = """
trainer:
  max_steps: {max_steps}
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning_mp3d.callbacks.finite.FiniteGuard
    - class_path: lightning_mp3d.callbacks.checkpoint.LastCheckpoint
      init_args:
        dirpath: runs/aae/checkpoints
        every_n_train_steps: {every}
        every_minutes: 0
model:
  init_args:
    encoder:
      width: 32
    pose_decoder:
      width: 32
    discriminator:
      width: 32
    num_figure_poses: 0
data:
  init_args:
    batch_size: 8
    batches_per_epoch: 40
    val_size: 64
    val_batch_size: 64
"""


def small_aae(tmp_path: Path, max_steps: int, every: int) -> str:
    """An ``--extra`` argument that shrinks the pipeline's AAE stage (3 optimizer steps per batch)."""
    path = tmp_path / f"small_aae_{max_steps}_{every}.yaml"
    path.write_text(SMALL_AAE.format(max_steps=max_steps, every=every))
    return f"--extra=aae:--config={path}"


def pipeline_cmd(work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lightning_mp3d.pipeline", "--workdir", str(work), "--stages", "aae", "--skip-eval",
            "--wandb", "disabled", *extra]  # fmt: skip


def start_pipeline(work: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    """Start the pipeline; return it and the PID of its stage process (read from its '(pid N)' line)."""
    proc = subprocess.Popen(
        pipeline_cmd(work, *extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:
        found = re.search(r"aae: (?:train|resume) \(pid (\d+)\)", line)
        if found:
            return proc, int(found.group(1))
    raise AssertionError(f"the pipeline started no stage (exit {proc.wait()})")


def wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# ------------------------------------------------------------------------------------------- item 1: kill / resume
def test_a_stage_killed_by_sigkill_resumes_from_its_periodic_checkpoint_and_ends_with_the_uninterrupted_weights(
    tmp_path, monkeypatch
):
    total, every = 3 * 60, 3 * 10  # 60 batches, last.ckpt every 10
    shrink = small_aae(tmp_path, total, every)
    whole = tmp_path / "whole"  # the reference: the same stage, uninterrupted (in-process: one start-up less)
    whole.mkdir()
    monkeypatch.chdir(whole)
    cli_main(["fit", *(f"--config={c}" for c in pipeline.stage_configs("aae", "tiny")), shrink.split(":", 1)[1]])

    work = tmp_path / "killed"
    proc, stage_pid = start_pipeline(work, shrink)
    last = work / "runs" / "aae" / "checkpoints" / "last.ckpt"
    wait_for(last)
    os.kill(stage_pid, signal.SIGKILL)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0, out
    killed_at = ckpt_step(last)
    assert 0 < killed_at < total and killed_at % every == 0  # a periodic save, not the final one

    again = subprocess.run(pipeline_cmd(work, shrink), cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "an interrupted run left last.ckpt" in again.stdout and "resuming from it" in again.stdout
    assert "--ckpt_path runs/aae/checkpoints/last.ckpt" in again.stdout
    assert "config" not in again.stdout.split("resuming from it")[0].splitlines()[-1]  # not the "config changed" reason
    assert ckpt_step(last) == total
    expected = weights(whole / "runs" / "aae" / "checkpoints" / "last.ckpt")
    got = weights(last)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    stamp = json.loads((work / "runs" / "aae" / "pipeline_stamp.json").read_text())
    assert stamp["status"] == "done" and stamp["sha256"] == pipeline.file_sha256(last)


# ------------------------------------------------------------------------------------------- item 2: orphans, lock
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["pipeline_sigkill", "pipeline_sigterm"])
def test_a_dead_or_stopped_pipeline_takes_its_stage_down_which_saves_last_ckpt_first(tmp_path, sig):
    work = tmp_path / "work"
    proc, stage_pid = start_pipeline(work, small_aae(tmp_path, 3 * 100_000, 3 * 20))
    last = work / "runs" / "aae" / "checkpoints" / "last.ckpt"
    wait_for(last)  # training is under way
    if sig == signal.SIGKILL:  # freeze the stage so that it outlives the pipeline for a moment, as an orphan would
        os.kill(stage_pid, signal.SIGSTOP)
    proc.send_signal(sig)
    if sig == signal.SIGKILL:
        proc.wait(timeout=30)
        second = subprocess.run(pipeline_cmd(work), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and f"another mp3d-pipeline (PID {proc.pid})" in second.stderr, second.stderr
        assert "the pipeline is gone; a stage it started is still saving" in second.stderr
        assert not any(".old-" in p.name for p in (work / "runs").iterdir())  # nothing moved under the orphan
        os.kill(stage_pid, signal.SIGCONT)  # it now handles the SIGTERM the pipeline's death sent it
    out = proc.communicate(timeout=120)[0]  # EOF: the stage (which shares the pipe) has exited too
    deadline = time.monotonic() + 30
    while alive(stage_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(stage_pid), "the stage outlived its pipeline"
    saved = re.search(r"Stopped at step (\d+): saved .*last\.ckpt", out)
    assert saved, out[-3000:]
    assert ckpt_step(last) == int(saved.group(1)) < 3 * 100_000
    stamp = json.loads((work / "runs" / "aae" / "pipeline_stamp.json").read_text())
    assert stamp["status"] == "running"
    assert pipeline.plan_action(pipeline.StageRun("aae", [], workdir=work), stamp["fingerprint"])[0] == "resume"


def test_a_second_pipeline_on_the_same_workdir_is_refused_naming_the_holder(tmp_path):
    with pipeline.workdir_lock(tmp_path) as _:
        with pytest.raises(SystemExit, match=rf"another mp3d-pipeline \(PID {os.getpid()}\)"):
            pipeline.main(["--workdir", str(tmp_path), "--stages", "aae", "--skip-eval", "--wandb", "disabled"])
    with pipeline.workdir_lock(tmp_path):  # released when the holder is done
        pass


def test_a_stamp_does_not_vouch_for_a_checkpoint_rewritten_after_it(fake_fit):
    run_pipeline(fake_fit.work, "--stages=aae")
    fake_fit()
    ckpt = fake_fit.work / "runs" / "aae" / "checkpoints" / "last.ckpt"
    ckpt.write_text("weights of some other run")  # an orphan or a manual re-run wrote into the folder
    run_pipeline(fake_fit.work, "--stages=aae")
    assert [c["stage"] for c in fake_fit()] == ["aae"]  # retrained, not skipped
    assert any(".old-" in p.name for p in (fake_fit.work / "runs").iterdir())


def test_the_pipeline_says_why_it_retrains_a_stage_killed_before_its_first_checkpoint(fake_fit, capsys):
    fake_fit.install(fail_stage="aae")
    with pytest.raises(subprocess.CalledProcessError):
        run_pipeline(fake_fit.work, "--stages=aae")
    fake_fit.install()
    run_pipeline(fake_fit.work, "--stages=aae")
    assert "aae: an interrupted run stopped before its first checkpoint" in capsys.readouterr().out


def test_evaluation_with_nothing_to_evaluate_is_skipped_with_a_message(fake_fit, capsys):
    assert pipeline.main(["--workdir", str(fake_fit.work), "--stages", "aae", "--wandb", "disabled"]) == 0
    assert "evaluation skipped" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- item 3: last-v1.ckpt
def test_rerunning_a_stage_by_hand_overwrites_last_ckpt_instead_of_writing_last_v1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_AAE.format(max_steps=3 * 4, every=3 * 2))
    args = ["fit", f"--config={ROOT / 'configs/stage_aae.yaml'}", f"--config={config}"]
    cli_main(args)
    second = cli_main([*args, "--trainer.max_steps=18"])
    folder = tmp_path / "runs" / "aae" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert ckpt_step(folder / "last.ckpt") == second.trainer.global_step == 18


# ------------------------------------------------------------------------------------------- item 4: NaN
def test_a_diverging_aae_stops_naming_stage_step_and_loss_and_writes_no_nan_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_AAE.format(max_steps=3 * 40, every=3))
    args = ["fit", f"--config={ROOT / 'configs/stage_aae.yaml'}", f"--config={config}"]
    args.append("--model.init_args.optimizer.lr=1e12")
    with pytest.raises(
        NonFiniteError, match=r"stage 'AAEPretraining': non-finite value at step \d+ .*(train/loss_\w+=|weight )"
    ):
        cli_main(args)
    for ckpt in (tmp_path / "runs" / "aae" / "checkpoints").glob("*.ckpt"):
        state = weights(ckpt)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), ckpt


def test_a_diverging_student_stage_stops_before_the_update_and_validation_never_logs_nan_as_zero(tmp_path):
    teacher, aae = make_frozen_checkpoints(tmp_path / "frozen")
    # phase 1 (L_recon against D_syn's ground truth is never 0, unlike L_distl where a random teacher sees nobody)
    with pytest.raises(NonFiniteError, match=r"stage 'phase1': non-finite (loss|value)\b.* at step \d+"):
        run_stage("phase1", tmp_path, teacher, aae, "--model.init_args.optimizer.lr=1e30", "--trainer.max_steps=40")
    for ckpt in (tmp_path / "phase1" / "checkpoints").glob("*.ckpt"):
        assert all(torch.isfinite(v).all() for v in weights(ckpt).values() if v.is_floating_point()), ckpt

    # a student that finds nobody (threshold 1) has no MPJPE: NaN, not a perfect 0
    cli = run_stage("distill", tmp_path / "quiet", teacher, aae, "--model.init_args.root_threshold=1.0",
                    "--trainer.max_steps=1")  # fmt: skip
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert math.isnan(metrics["val/mpjpe"])  # (PCK over all ground truths is a true 0: every person missed)


def test_inference_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    from lightning_mp3d.inference import PoseEstimator

    teacher, aae = make_frozen_checkpoints(tmp_path / "frozen")
    run_stage("distill", tmp_path, teacher, aae, "--trainer.max_steps=1")
    good = tmp_path / "distill" / "checkpoints" / "last.ckpt"
    PoseEstimator.from_stage_checkpoint(good)
    ckpt = torch.load(good, map_location="cpu", weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.startswith("h."))
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    bad = tmp_path / "nan.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match=rf"nan.ckpt.*non-finite.*{re.escape(name)}"):
        PoseEstimator.from_stage_checkpoint(bad)


# ------------------------------------------------------------------------------------------- items 5 and 8: --ckpt_path
def test_ckpt_path_of_another_stage_or_a_broken_file_is_refused_before_anything_runs(tmp_path, capsys):
    distill = tmp_path / "distill.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "lightning_mp3d.systems.distill.DistillationWarmup"}}, distill)
    phase1 = ["fit", f"--config={ROOT / 'configs/stage_phase1.yaml'}", "--trainer.logger=false"]
    with pytest.raises(SystemExit):
        cli_main([*phase1, f"--ckpt_path={distill}"])
    err = capsys.readouterr().err
    assert "is a checkpoint of lightning_mp3d.systems.distill.DistillationWarmup" in err
    assert "trains lightning_mp3d.systems.phase1.Phase1Alignment" in err and "init_from" in err

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(distill.read_bytes()[:200])
    with pytest.raises(SystemExit):
        cli_main([*phase1, f"--ckpt_path={truncated}"])
    assert "truncated.ckpt' cannot be read (200 bytes): truncated, corrupt" in capsys.readouterr().err


def test_a_stamp_of_the_older_pipeline_is_trusted_once_and_upgraded_with_the_hash(fake_fit):
    run_pipeline(fake_fit.work, "--stages=aae")
    fake_fit()
    stamp_path = fake_fit.work / "runs" / "aae" / "pipeline_stamp.json"
    stamp = json.loads(stamp_path.read_text())
    stamp_path.write_text(json.dumps({"stage": "aae", "fingerprint": stamp["fingerprint"], "seconds": 1.0}))
    run_pipeline(fake_fit.work, "--stages=aae")
    assert fake_fit() == []
    upgraded = json.loads(stamp_path.read_text())
    assert upgraded["status"] == "done" and upgraded["sha256"] == stamp["sha256"]


def test_the_guard_catches_a_nan_weight_behind_finite_losses_and_refuses_to_checkpoint_it():
    from types import SimpleNamespace

    from lightning_mp3d.callbacks.finite import FiniteGuard

    module = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(
        callback_metrics={"train/loss_x": torch.tensor(1.0)}, global_step=7, current_epoch=0, checkpoint_callbacks=[]
    )
    guard = FiniteGuard()
    guard.on_train_batch_end(trainer, module, None, None, 3)  # all finite: nothing happens
    with torch.no_grad():
        module.bias[1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"stage 'Linear': non-finite value at step 7 .* weight bias"):
        guard.on_train_batch_end(trainer, module, None, None, 3)
    with pytest.raises(NonFiniteError, match=r"refusing to write a checkpoint at step 7 with non-finite weights"):
        guard.on_save_checkpoint(trainer, module, {"state_dict": module.state_dict()})


class PoisonAt(Callback):
    """Set one weight to NaN before batch ``batch``, as a diverging step would."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


def test_a_run_that_turns_nan_keeps_its_last_finite_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_AAE.format(max_steps=3 * 40, every=3))  # last.ckpt after every batch
    poison = {"class_path": f"{__name__}.PoisonAt", "init_args": {"batch": 5}}
    args = ["fit", f"--config={ROOT / 'configs/stage_aae.yaml'}", f"--config={config}",
            f"--trainer.callbacks+={json.dumps(poison)}"]  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"at step 18 \(epoch 0, batch 5\).*last finite checkpoint is .*last"):
        cli_main(args)
    last = tmp_path / "runs" / "aae" / "checkpoints" / "last.ckpt"
    assert ckpt_step(last) == 15  # after batch 4, the last finite weights
    assert all(torch.isfinite(v).all() for v in weights(last).values() if v.is_floating_point())
