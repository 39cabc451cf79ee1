"""The `lightning` command and every stage config: entry points exist and every YAML instantiates."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_mp3d.cli import cli_main

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
    cli = cli_main(
        ["--config", str(config), "--config", str(ROOT / "configs" / "tiny" / config.name), "--trainer.logger=false"],
        run=False,
    )
    assert type(cli.model).__module__.startswith("lightning_mp3d.systems")
    assert type(cli.datamodule).__module__.startswith("lightning_mp3d.datamodules")


def test_unknown_config_key_is_a_clear_error(tmp_path):
    config = CONFIGS[0]
    args = ("fit", "--config", str(config), "--model.init_args.no_such_key=1", "--print_config")
    result = run_module(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "no_such_key" in result.stderr
