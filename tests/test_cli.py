"""The `lightning` command and every stage config: entry points exist, every YAML instantiates, and bare stage config
names (`lightning fit --config stage_phase1.yaml`) resolve against the project's configs from any folder."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_mp3d.cli import CONFIG_DIR, available_configs, cli_main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("stage_*.yaml"))
BIN = Path(sys.executable).parent


def run_module(*args: str, check: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m lightning_mp3d ARGS`` with captured text output."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_mp3d", *args], capture_output=True, text=True, check=check, cwd=cwd
    )


@pytest.mark.parametrize("entry", ["lightning", "lightning-mp3d"])
def test_console_scripts_run_the_lightning_cli(entry):
    exe = shutil.which(entry, path=str(BIN)) or shutil.which(entry)
    assert exe is not None, f"console script {entry!r} is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "{fit,validate,test,predict}" in out


def test_python_m_entry():
    out = run_module("fit", "--help", check=True).stdout
    assert "--model CONFIG" in out and "--data CONFIG" in out


def test_every_stage_config_exists():
    names = {p.stem for p in CONFIGS}
    assert {"stage_teacher", "stage_aae", "stage_distill", "stage_phase1", "stage_phase2"} <= names
    for path in CONFIGS:
        assert (ROOT / "configs" / "tiny" / path.name).is_file(), f"tiny preset overrides missing for {path.name}"


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_prints_and_instantiates(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = ROOT / "configs" / "tiny" / config.name
    out = run_module("fit", "--config", str(config), "--config", str(tiny), "--print_config", check=True).stdout
    assert "class_path: lightning_mp3d." in out
    from lightning_mp3d.pipeline import stage_configs

    layers = stage_configs(config.stem.removeprefix("stage_"), "cpu")  # default, tiny/, cpu/ (tiny is printed above)
    assert [p.parent.name for p in layers][:2] == ["configs", "tiny"]
    cli = cli_main([arg for p in layers for arg in ("--config", str(p))] + ["--trainer.logger=false"], run=False)
    assert type(cli.model).__module__.startswith("lightning_mp3d.systems")
    assert type(cli.datamodule).__module__.startswith("lightning_mp3d.datamodules")


def test_unknown_config_key_is_a_clear_error(tmp_path):
    config = CONFIGS[0]
    args = ("fit", "--config", str(config), "--model.init_args.no_such_key=1", "--print_config")
    result = run_module(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "no_such_key" in result.stderr


def test_aae_sub_model_groups_merge_key_by_key_and_refuse_a_misspelt_key(tmp_path, capsys):
    import torch

    stage = [
        "--config",
        str(ROOT / "configs" / "stage_aae.yaml"),
        "--config",
        str(ROOT / "configs/tiny/stage_aae.yaml"),
    ]
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("model:\n  init_args:\n    discriminator: {spectral_norm: true}\n")
    cli = cli_main([*stage, "--config", str(overlay), "--trainer.logger=false"], run=False)
    assert cli.model.hparams.discriminator == {"width": 128, "depth": 2, "spectral_norm": True}  # tiny's sizes kept
    assert cli.model.hparams.encoder == {"width": 128, "depth": 2}
    linear = [m for m in cli.model.discriminator.net if isinstance(m, torch.nn.Linear)]
    assert linear and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in linear)
    overlay.write_text("model:\n  init_args:\n    discriminator: {widht: 64}\n")
    with pytest.raises(SystemExit) as done:
        cli_main([*stage, "--config", str(overlay), "--trainer.logger=false"], run=False)
    assert done.value.code not in (0, None) and "widht" in capsys.readouterr().err


def test_card_command_with_a_bare_stage_name_works_from_the_project_root():
    """``lightning fit --config stage_phase1.yaml`` as the card types it, at the project root (no such file there)."""
    assert not (ROOT / "stage_phase1.yaml").exists()
    exe = shutil.which("lightning", path=str(BIN)) or shutil.which("lightning")
    args = [exe, "fit", "--config", "stage_phase1.yaml", "--print_config"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "class_path: lightning_mp3d.systems.phase1.Phase1Alignment" in out
    assert "default_root_dir: runs/phase1" in out  # paths inside configs stay relative to where the command runs


def test_bare_stage_and_preset_names_work_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config=stage_aae.yaml", "-c", "tiny/stage_aae.yaml", "--print_config"])
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert "class_path: lightning_mp3d.systems.aae.AAEPretraining" in out
    assert "max_steps: 12600" in out  # the tiny preset's override was read too


def test_unknown_config_name_lists_the_available_stage_configs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", "stage_phase3.yaml"])
    assert done.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "stage_phase3.yaml" in err
    assert all(f"stage_{name}.yaml" in err for name in ("teacher", "aae", "distill", "phase1", "phase2"))


def test_packaged_configs_are_the_project_configs():
    """One place to edit: the package's configs/ (package data in a wheel) is the top-level configs/ in a checkout."""
    assert CONFIG_DIR.resolve() == (ROOT / "configs").resolve()
    assert {f"stage_{n}.yaml" for n in ("teacher", "aae", "distill", "phase1", "phase2")} <= set(available_configs())
    assert "tiny/stage_phase1.yaml" in available_configs()


def test_lightnings_throughput_monitor_is_configurable_with_our_sample_count(tmp_path, monkeypatch):
    """callbacks/throughput.py documents these flags for live samples/s; a phase-1/2 step counts both sources."""
    import torch
    from pytorch_lightning.callbacks import ThroughputMonitor

    from lightning_mp3d.callbacks.throughput import samples_in_batch
    from lightning_mp3d.pipeline import stage_configs

    monkeypatch.chdir(tmp_path)
    flags = [
        "--trainer.callbacks+=pytorch_lightning.callbacks.ThroughputMonitor",
        "--trainer.callbacks.batch_size_fn=lightning_mp3d.callbacks.throughput.samples_in_batch",
        "--trainer.callbacks.window_size=20",
    ]
    configs = [f"--config={c}" for c in stage_configs("aae", "tiny")]
    cli = cli_main([*configs, "--trainer.logger=false", *flags], run=False)
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, ThroughputMonitor)]
    assert monitor.batch_size_fn is samples_in_batch and monitor.kwargs["window_size"] == 20
    step = {"syn": {"maps": torch.zeros(4, 43, 28, 28)}, "image": {"image": torch.zeros(3, 3, 224, 224)}}
    assert samples_in_batch(step) == 7 and samples_in_batch({"poses": torch.zeros(5, 15, 3)}) == 5
