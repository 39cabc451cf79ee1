"""The stage chain of ``mp3d-pipeline``: stages, configs, fingerprints and stamps (no subprocess, no Lightning).

The chain is teacher (stage 0) -> aae -> distill -> phase1 -> phase2 -> refine (``STAGES``, ``UPSTREAM``); a stage's
config files are its default YAML and the preset's override layers (``stage_configs``).

Skipping and resuming: each stage's ``runs/<stage>/pipeline_stamp.json`` holds a fingerprint of everything that
determines it (the text of its config files, the command-line overrides and the fingerprints of the stages it chains
from) and its status: "running" from the moment it starts, "done" when it finished, then with the SHA-256 of the
``checkpoints/last.ckpt`` it vouches for. On a re-run a stage is skipped when it is done, its fingerprint equals the
new one and ``last.ckpt`` is still that file; an interrupted stage (status "running", same fingerprint) resumes with
``--ckpt_path last.ckpt`` (the stages refresh ``last.ckpt`` while training and on SIGTERM); any other stage is retrained
after its old folder is renamed (nothing a user produced is deleted), and the pipeline says why.

``plan_action`` makes that decision; ``pipeline.py`` runs the stages and stamps them (``write_stamp``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightning_mp3d.atomic import write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the packaged configs (a link to ../configs here)
STAGES = ("teacher", "aae", "distill", "phase1", "phase2", "refine")
UPSTREAM = {
    "teacher": (),
    "aae": (),
    "distill": ("teacher", "aae"),
    "phase1": ("distill",),
    "phase2": ("phase1",),
    "refine": ("phase2",),
}
PRESETS = ("tiny", "cpu", "paper")


@dataclass
class StageRun:
    """One stage of the chain as the pipeline runs it."""

    name: str
    configs: list[Path]
    overrides: list[str] = field(default_factory=list)
    workdir: Path = Path(".")

    @property
    def folder(self) -> Path:
        """The stage's run folder, ``<workdir>/runs/<name>``."""
        return self.workdir / "runs" / self.name

    @property
    def last_ckpt(self) -> Path:
        """The checkpoint the stage resumes from and hands to the stages downstream."""
        return self.folder / "checkpoints" / "last.ckpt"

    @property
    def stamp_path(self) -> Path:
        """The stage's stamp, ``pipeline_stamp.json`` in its run folder."""
        return self.folder / "pipeline_stamp.json"

    def fingerprint(self, upstream: dict[str, str]) -> str:
        """16 hex digits of SHA-256 over the configs' names and text, the overrides and ``upstream``'s fingerprints."""
        digest = hashlib.sha256()
        for path in self.configs:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        for item in self.overrides:
            digest.update(item.encode())
        for name in UPSTREAM[self.name]:
            digest.update(f"{name}={upstream[name]}".encode())
        return digest.hexdigest()[:16]


PRESET_LAYERS = {"tiny": ("tiny",), "cpu": ("tiny", "cpu"), "paper": ()}  # override folders, applied in order


def stage_configs(name: str, preset: str) -> list[Path]:
    """The config files of a stage under a preset: the default YAML, then the preset's override layers.

    ``cpu`` is the ``tiny`` preset with longer schedules on top, for the stages it lists: a stage it leaves alone has
    the same configs, hence the same fingerprint, as under ``tiny``, so ``--preset cpu`` reuses it from a tiny run.
    """
    base = CONFIG_DIR / f"stage_{name}.yaml"
    if not base.is_file():
        raise FileNotFoundError(f"stage config {base} is missing")
    configs = [base]
    for k, layer in enumerate(PRESET_LAYERS.get(preset, (preset,))):
        preset_file = CONFIG_DIR / layer / f"stage_{name}.yaml"
        if preset_file.is_file():
            configs.append(preset_file)
        elif k == 0:  # the first layer is the preset itself; later ones may leave a stage as it is
            raise FileNotFoundError(f"preset {preset!r} has no overrides for stage {name!r}: expected {preset_file}")
    return configs


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_stamp(run: StageRun) -> dict:
    """The stage's stamp record ({} when absent or unreadable)."""
    try:
        record = json.loads(run.stamp_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def write_stamp(run: StageRun, fingerprint: str, status: str, seconds: float | None = None) -> None:
    """Stamp the stage "running" (before it starts) or "done" (with the checkpoint it vouches for and its hash)."""
    record: dict = {"stage": run.name, "fingerprint": fingerprint, "status": status, "pid": os.getpid()}
    if status == "done":
        record.update(
            checkpoint=str(run.last_ckpt.relative_to(run.folder)),
            sha256=file_sha256(run.last_ckpt),
            seconds=round(seconds or 0.0, 1),
        )
    write_text_atomic(run.stamp_path, json.dumps(record, indent=2))


def plan_action(run: StageRun, fingerprint: str) -> tuple[str, str]:
    """('skip' | 'resume' | 'train', why) for a stage, from its checkpoint and stamp."""
    stamp = read_stamp(run)
    same = stamp.get("fingerprint") == fingerprint
    has_ckpt = run.last_ckpt.is_file()
    if stamp.get("status") == "done" and same and has_ckpt:
        if stamp.get("sha256") == file_sha256(run.last_ckpt):
            return "skip", f"checkpoint matches the config (fingerprint {fingerprint}); skipped"
        return "train", f"{run.last_ckpt.name} is not the checkpoint its stamp vouches for (rewritten since)"
    if "status" not in stamp and same and has_ckpt:  # stamped by an older pipeline, which kept no hash
        return "skip", f"checkpoint matches the config (fingerprint {fingerprint}, older stamp); skipped"
    if stamp.get("status") == "running" and same:
        if has_ckpt:
            written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.last_ckpt.stat().st_mtime))
            return "resume", f"an interrupted run left {run.last_ckpt.name} (written {written}); resuming from it"
        return "train", "an interrupted run stopped before its first checkpoint"
    if not run.folder.exists():
        return "train", "first run"
    if not stamp:
        return "train", "its folder holds no pipeline stamp (not a run of this pipeline, or from an older version)"
    return "train", "its config or an upstream stage changed"
