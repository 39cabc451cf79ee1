"""The main job: the whole stage chain on the embedded default, then the target-domain results table.

``mp3d-pipeline --preset tiny`` runs, each as a real ``lightning fit --config ...`` subprocess chained by checkpoint:
teacher (stage 0) -> aae -> distill -> phase1 -> phase2, then evaluates every stage on held-out target-domain images and
writes ``results/`` (Markdown + JSON + PNG).

All relative paths in the stage configs (``runs/<stage>/...``) resolve under ``--workdir`` (default: the current
folder).

Skipping and resuming: when a stage finishes, the pipeline writes ``runs/<stage>/pipeline_stamp.json`` with a
fingerprint of everything that determines it: the text of its config files, the command-line overrides and the
fingerprints of the stages it chains from. On a re-run a stage is skipped when ``checkpoints/last.ckpt`` exists and
the stamp's fingerprint equals the new one; a stage with ``last.ckpt`` but no stamp was killed midway and resumes with
``--ckpt_path last.ckpt``; a stage whose fingerprint changed is retrained after its old folder is renamed (nothing a
user produced is deleted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightning_mp3d.atomic import write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
STAGES = ("teacher", "aae", "distill", "phase1", "phase2")
UPSTREAM = {"teacher": (), "aae": (), "distill": ("teacher", "aae"), "phase1": ("distill",), "phase2": ("phase1",)}
PRESETS = ("tiny", "paper")


@dataclass
class StageRun:
    """One stage of the chain as the pipeline runs it."""

    name: str
    configs: list[Path]
    overrides: list[str] = field(default_factory=list)
    workdir: Path = Path(".")

    @property
    def folder(self) -> Path:
        return self.workdir / "runs" / self.name

    @property
    def last_ckpt(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"

    @property
    def stamp_path(self) -> Path:
        return self.folder / "pipeline_stamp.json"

    def fingerprint(self, upstream: dict[str, str]) -> str:
        digest = hashlib.sha256()
        for path in self.configs:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        for item in self.overrides:
            digest.update(item.encode())
        for name in UPSTREAM[self.name]:
            digest.update(f"{name}={upstream[name]}".encode())
        return digest.hexdigest()[:16]


def stage_configs(name: str, preset: str) -> list[Path]:
    """The config files of a stage under a preset: the default YAML, then the preset's overrides if any."""
    base = CONFIG_DIR / f"stage_{name}.yaml"
    if not base.is_file():
        raise FileNotFoundError(f"stage config {base} is missing")
    configs = [base]
    preset_file = CONFIG_DIR / preset / f"stage_{name}.yaml"
    if preset != "paper" and not preset_file.is_file():
        raise FileNotFoundError(f"preset {preset!r} has no overrides for stage {name!r}: expected {preset_file}")
    if preset_file.is_file():
        configs.append(preset_file)
    return configs


def read_stamp(run: StageRun) -> str | None:
    try:
        return json.loads(run.stamp_path.read_text())["fingerprint"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return None


def write_stamp(run: StageRun, fingerprint: str, seconds: float) -> None:
    record = {"stage": run.name, "fingerprint": fingerprint, "seconds": round(seconds, 1)}
    write_text_atomic(run.stamp_path, json.dumps(record, indent=2))


def plan_action(run: StageRun, fingerprint: str) -> str:
    """'skip', 'resume' or 'train' for a stage, from its checkpoint and stamp."""
    if run.last_ckpt.is_file():
        stamp = read_stamp(run)
        if stamp == fingerprint:
            return "skip"
        if stamp is None:
            return "resume"
    return "train"


def lightning_command() -> list[str]:
    """The installed ``lightning`` console script of this package (same interpreter as the pipeline)."""
    return [sys.executable, "-m", "lightning_mp3d"]


def run_stage(run: StageRun, action: str, env: dict[str, str]) -> None:
    cmd = [*lightning_command(), "fit"]
    for path in run.configs:
        cmd += ["--config", str(path)]
    cmd += run.overrides
    if action == "resume":
        cmd += ["--ckpt_path", str(run.last_ckpt.relative_to(run.workdir))]
    elif run.folder.exists():
        aside = run.folder.with_name(f"{run.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        print(f"[pipeline] {run.name}: its config changed; moving the old run to {aside}", flush=True)
        shutil.move(str(run.folder), aside)
    print(f"[pipeline] {run.name}: {action}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=run.workdir)
    if not run.last_ckpt.is_file():
        raise RuntimeError(f"stage {run.name} finished without writing {run.last_ckpt}")


def run_chain(
    workdir: Path, preset: str, stages: tuple[str, ...], extra: dict[str, list[str]], env: dict[str, str]
) -> dict[str, str]:
    """Run (or skip/resume) each stage in order inside ``workdir``; returns each stage's fingerprint."""
    fingerprints: dict[str, str] = {}
    for name in STAGES:
        run = StageRun(name, stage_configs(name, preset), extra.get(name, []), workdir)
        fingerprint = run.fingerprint(fingerprints)
        fingerprints[name] = fingerprint
        if name not in stages:
            continue
        execute(run, fingerprint, env)
    return fingerprints


def execute(run: StageRun, fingerprint: str, env: dict[str, str]) -> None:
    """Skip, resume or train one stage, then stamp it."""
    action = plan_action(run, fingerprint)
    if action == "skip":
        print(f"[pipeline] {run.name}: checkpoint matches the config (fingerprint {fingerprint}); skipped", flush=True)
        return
    start = time.time()
    run_stage(run, action, env)
    write_stamp(run, fingerprint, time.time() - start)


def run_ablation(
    workdir: Path, preset: str, fingerprints: dict[str, str], extra: dict[str, list[str]], env: dict[str, str]
) -> Path:
    """Phase 1 without L_adapt (Table 2's "+ L_recon" row) in ``<workdir>/ablation/recon_only``.

    It chains from the main run's distill stage (teacher, aae and distill are linked in), so the rows differ only
    in the losses. Returns its checkpoint.
    """
    root = workdir / "ablation" / "recon_only"
    (root / "runs").mkdir(parents=True, exist_ok=True)
    for upstream in UPSTREAM["phase1"] + UPSTREAM["distill"]:
        link = root / "runs" / upstream
        if not link.exists():
            link.symlink_to(workdir / "runs" / upstream, target_is_directory=True)
    overrides = [*extra["phase1"], "--model.init_args.use_adapt=false", "--trainer.logger.init_args.name=phase1_recon"]
    run = StageRun("phase1", stage_configs("phase1", preset), overrides, root)
    execute(run, run.fingerprint(fingerprints), env)
    return run.last_ckpt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mp3d-pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", choices=PRESETS, default="tiny", help="tiny: this CPU in ~15 min; paper: GPU schedule"
    )
    parser.add_argument("--workdir", type=Path, default=Path("."), help="folder holding runs/ and results/")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    parser.add_argument("--skip-eval", action="store_true", help="train only; no results table")
    parser.add_argument(
        "--wandb",
        choices=("offline", "online", "disabled"),
        default=None,
        help="W&B mode for every stage (default: $WANDB_MODE or offline)",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="STAGE:ARG",
        help="extra 'lightning fit' argument for one stage or 'all', e.g. --extra=all:--trainer.max_epochs=1 "
        "(part of the stage's fingerprint)",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="also run phase 1 without L_adapt (Table 2's '+ L_recon' row)"
    )
    parser.add_argument("--eval-images", type=int, default=128, help="size of the held-out target test set")
    return parser.parse_args(argv)


def parse_extra(items: list[str]) -> dict[str, list[str]]:
    """``["all:--a=1", "aae:--b=2"]`` -> per-stage argument lists (``all`` applies to every stage)."""
    extra: dict[str, list[str]] = {name: [] for name in STAGES}
    for item in items:
        stage, sep, arg = item.partition(":")
        if not sep or (stage != "all" and stage not in STAGES):
            raise SystemExit(f"--extra expects STAGE:ARG with STAGE in all,{','.join(STAGES)}; got {item!r}")
        for name in STAGES if stage == "all" else (stage,):
            extra[name].append(arg)
    return extra


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; expected a subset of {list(STAGES)}")
    extra = parse_extra(args.extra)
    if args.wandb == "disabled":  # CSV fallback: metrics still land in runs/<stage>/<stage>/version_*/metrics.csv
        for name in STAGES:
            extra[name][:0] = [
                "--trainer.logger=pytorch_lightning.loggers.CSVLogger",
                f"--trainer.logger.save_dir=runs/{name}",
                f"--trainer.logger.name={name}",
            ]
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["WANDB_MODE"] = args.wandb or env.get("WANDB_MODE", "offline")
    env.setdefault("WANDB_RUN_GROUP", f"chain-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    start = time.time()
    fingerprints = run_chain(workdir, args.preset, stages, extra, env)
    extra_rows = {}
    if args.ablation:
        extra_rows["phase1_recon"] = run_ablation(workdir, args.preset, fingerprints, extra, env)
    print(f"[pipeline] stages done in {time.time() - start:.0f} s", flush=True)
    if not args.skip_eval:
        from lightning_mp3d.report import evaluate_chain

        evaluate_chain(
            workdir / "runs", workdir / "results", args.preset, num_images=args.eval_images, extra_rows=extra_rows
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
