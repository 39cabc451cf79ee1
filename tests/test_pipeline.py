"""The pipeline's skip / resume / retrain decisions, with a stand-in for `lightning fit` that records its calls."""

import json
from pathlib import Path

import pytest

from lightning_mp3d import pipeline
from tests.helpers import run_pipeline


def test_first_run_trains_every_stage_in_order_then_everything_is_skipped(fake_fit):
    run_pipeline(fake_fit.work)
    assert [c["stage"] for c in fake_fit()] == list(pipeline.STAGES)
    for stage in pipeline.STAGES:
        stamp = json.loads((fake_fit.work / "runs" / stage / "pipeline_stamp.json").read_text())
        assert stamp["stage"] == stage and len(stamp["fingerprint"]) == 16
    run_pipeline(fake_fit.work)
    assert fake_fit() == []


def test_a_changed_stage_retrains_it_and_everything_downstream_keeping_the_old_run(fake_fit):
    run_pipeline(fake_fit.work)
    fake_fit()
    run_pipeline(fake_fit.work, "--extra=distill:--model.init_args.optimizer.lr=0.5")
    calls = fake_fit()
    assert [c["stage"] for c in calls] == ["distill", "phase1", "phase2", "refine"]
    assert "--model.init_args.optimizer.lr=0.5" in calls[0]["args"]
    kept = sorted(p.name for p in (fake_fit.work / "runs").iterdir() if ".old-" in p.name)
    assert [k.split(".old-")[0] for k in kept] == ["distill", "phase1", "phase2", "refine"]


def test_a_stage_killed_midway_resumes_from_last_ckpt(fake_fit):
    fake_fit.install(fail_stage="phase1")
    with pytest.raises(Exception):  # noqa: B017 - the subprocess failure surfaces as CalledProcessError
        run_pipeline(fake_fit.work)
    fake_fit()
    # phase1 left a checkpoint behind but no stamp, as a killed run does
    ckpt = fake_fit.work / "runs" / "phase1" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text("partial")
    fake_fit.install()
    run_pipeline(fake_fit.work)
    calls = fake_fit()
    assert [c["stage"] for c in calls] == ["phase1", "phase2", "refine"]
    assert calls[0]["args"][-2:] == ["--ckpt_path", str(Path("runs/phase1/checkpoints/last.ckpt"))]
    assert "--ckpt_path" not in calls[1]["args"]


def test_fingerprints_chain_through_upstream_stages():
    runs = {name: pipeline.StageRun(name, pipeline.stage_configs(name, "tiny")) for name in pipeline.STAGES}
    base: dict[str, str] = {}
    for name in pipeline.STAGES:
        base[name] = runs[name].fingerprint(base)
    changed = dict(base, teacher="0" * 16)
    assert runs["distill"].fingerprint(changed) != base["distill"]
    assert runs["aae"].fingerprint(changed) == base["aae"]


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="unknown stage"):
        pipeline.main(["--workdir", str(tmp_path), "--stages", "teacher,nope"])
    with pytest.raises(SystemExit, match="STAGE:ARG"):
        pipeline.main(["--workdir", str(tmp_path), "--extra=bogus:--x=1"])
    with pytest.raises(FileNotFoundError, match="preset 'nano' has no overrides"):
        pipeline.stage_configs("aae", "nano")


def test_ablation_seeds_and_supervised_rows_chain_from_the_main_run(fake_fit):
    run_pipeline(fake_fit.work, "--ablation", "--seeds", "2", "--supervised")
    work = fake_fit.work
    by_folder: dict[str, list] = {}
    for c in fake_fit():
        by_folder.setdefault(str(Path(c["cwd"]).relative_to(work)), []).append(c)
    assert [c["stage"] for c in by_folder["."]] == list(pipeline.STAGES)
    expected = {
        "ablation/phase1_distl": (
            ["phase1"],
            ["--model.init_args.use_recon=false", "--model.init_args.use_adapt=false"],
        ),
        "ablation/phase1_recon": (["phase1"], ["--model.init_args.use_adapt=false"]),
        "ablation/seed1/phase1_distl": (["phase1"], ["--model.init_args.use_recon=false", "--seed_everything=1"]),
        "ablation/seed1/phase1_recon": (["phase1"], ["--model.init_args.use_adapt=false", "--seed_everything=1"]),
        "ablation/seed1/main": (["phase1", "phase2"], ["--seed_everything=1"]),
        "supervised/ours_ws": (["phase1"], ["--model.init_args.use_weak_2d=true"]),
        "supervised/ours_fs": (["phase1"], ["--model.init_args.use_full_3d=true"]),
    }
    assert set(by_folder) == {".", *expected}
    for folder, (stages, flags) in expected.items():
        assert [c["stage"] for c in by_folder[folder]] == stages, folder
        assert all(f in c["args"] for c in by_folder[folder] for f in flags), folder
        assert all(("--seed_everything=1" in c["args"]) == ("seed1" in folder) for c in by_folder[folder])
    root = work / "ablation" / "phase1_recon"
    assert (root / "runs" / "phase1" / "checkpoints" / "last.ckpt").is_file()
    assert (root / "runs" / "distill").resolve() == (work / "runs" / "distill").resolve()
    seed_main = work / "ablation" / "seed1" / "main" / "runs"
    assert not (seed_main / "phase1").is_symlink() and (seed_main / "phase2" / "checkpoints" / "last.ckpt").is_file()
    run_pipeline(fake_fit.work, "--ablation", "--seeds", "2", "--supervised")
    assert fake_fit() == []


def test_a_config_file_from_print_config_runs_the_same_chain_as_its_flags(fake_fit, capsys):
    flags = ["--workdir", str(fake_fit.work), "--skip-eval", "--wandb", "disabled", "--extra=aae:--trainer.max_steps=2"]
    assert pipeline.main(flags) == 0
    assert "--trainer.max_steps=2" in fake_fit()[1]["args"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        pipeline.main([*flags, "--print_config"])
    config = fake_fit.work.parent / "pipeline.yaml"
    config.write_text(capsys.readouterr().out)
    assert pipeline.main(["--config", str(config)]) == 0
    assert fake_fit() == []  # same stage arguments, hence the same fingerprints: every stage is skipped
