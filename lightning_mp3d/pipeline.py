"""The main job: the whole stage chain on the embedded default, then the target-domain results table.

``mp3d-pipeline --preset tiny`` runs, each as a real ``lightning fit --config ...`` subprocess chained by checkpoint:
teacher (stage 0) -> aae -> distill -> phase1 -> phase2 -> refine (H', paper Fig. 6), then evaluates every stage on
held-out target-domain images and writes ``results/`` (Markdown + JSON + PNG).

All relative paths in the stage configs (``runs/<stage>/...``) resolve under ``--workdir`` (default: the current
folder).

Skipping and resuming: each stage's ``runs/<stage>/pipeline_stamp.json`` holds the fingerprint of everything that
determines it and its status; ``chain.py`` decides from it whether a stage is skipped, resumed or retrained (after its
old folder is renamed: nothing a user produced is deleted), and the pipeline says why.

Processes: one pipeline per workdir (an exclusive lock on ``<workdir>/.mp3d-pipeline.lock``, held by the pipeline and
its stage process; a second pipeline stops with an error naming the holder's PID). Each stage runs in its own process
group; when the pipeline is interrupted (Ctrl+C, SIGTERM) it sends the stage SIGTERM, so the stage saves ``last.ckpt``
and exits, and on Linux the stage gets the same SIGTERM if the pipeline itself is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from lightning_mp3d.chain import (
    CONFIG_DIR,
    PRESET_LAYERS,
    PRESETS,
    STAGES,
    UPSTREAM,
    StageRun,
    file_sha256,
    plan_action,
    read_stamp,
    stage_configs,
    write_stamp,
)
from lightning_mp3d.commands import FLAG, command_parser

LOCK_NAME = ".mp3d-pipeline.lock"
STOP_GRACE_S = 120.0  # how long a stopped stage may take to save last.ckpt before it is killed


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[int]:
    """Hold the exclusive lock of ``workdir``; yields the lock file's descriptor (stage processes inherit it)."""
    path = workdir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            hint = f"wait for it to finish or stop it (kill {holder})"
            if holder.isdigit() and not _alive(int(holder)):
                hint = f"the pipeline is gone; a stage it started is still saving and exiting (see: fuser {path})"
            raise SystemExit(
                f"another mp3d-pipeline (PID {holder}) or a stage it started is running in {workdir} "
                f"(lock {path}); {hint}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)  # releases the lock once the stage processes holding a copy have exited too


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stage_preexec(parent: int) -> None:
    """In the stage process: own process group, and SIGTERM when the pipeline dies (Linux), even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the pipeline died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def lightning_command() -> list[str]:
    """The installed ``lightning`` console script of this package (same interpreter as the pipeline)."""
    return [sys.executable, "-m", "lightning_mp3d"]


def run_stage(run: StageRun, action: str, env: dict[str, str], lock_fd: int | None = None) -> None:
    """Run one stage as a ``lightning fit`` subprocess in its own process group and wait for it.

    ``action`` "resume" adds ``--ckpt_path`` to its ``last.ckpt``; the stage inherits ``lock_fd``. However the wait
    ends (an interrupt too), the stage is stopped with ``stop_stage``. ``CalledProcessError`` when it fails,
    ``RuntimeError`` when it wrote no ``last.ckpt``.
    """
    cmd = [*lightning_command(), "fit"]
    for path in run.configs:
        cmd += ["--config", str(path)]
    cmd += run.overrides
    if action == "resume":
        cmd += ["--ckpt_path", str(run.last_ckpt.relative_to(run.workdir))]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=run.workdir,
        start_new_session=True,
        preexec_fn=functools.partial(_stage_preexec, os.getpid()),
        pass_fds=() if lock_fd is None else (lock_fd,),
    )
    print(f"[pipeline] {run.name}: {action} (pid {proc.pid}): {' '.join(cmd)}", flush=True)
    try:
        code = proc.wait()
    finally:
        stop_stage(proc)
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)
    if not run.last_ckpt.is_file():
        raise RuntimeError(f"stage {run.name} finished without writing {run.last_ckpt}")


def stop_stage(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the stage's process group (it saves last.ckpt and exits), then SIGKILL what is left after grace_s."""
    if proc.poll() is not None:
        return
    print(f"[pipeline] stopping the stage (pid {proc.pid}); it saves last.ckpt to resume from", flush=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_chain(
    workdir: Path,
    preset: str,
    stages: tuple[str, ...],
    extra: dict[str, list[str]],
    env: dict[str, str],
    lock_fd: int | None = None,
) -> dict[str, str]:
    """Run (or skip/resume) each stage in order inside ``workdir``; returns each stage's fingerprint."""
    fingerprints: dict[str, str] = {}
    for name in STAGES:
        run = StageRun(name, stage_configs(name, preset), extra.get(name, []), workdir)
        fingerprint = run.fingerprint(fingerprints)
        fingerprints[name] = fingerprint
        if name not in stages:
            continue
        execute(run, fingerprint, env, lock_fd)
    return fingerprints


def execute(run: StageRun, fingerprint: str, env: dict[str, str], lock_fd: int | None = None) -> None:
    """Skip, resume or train one stage; stamp it "running" before and "done" after."""
    action, why = plan_action(run, fingerprint)
    print(f"[pipeline] {run.name}: {why}", flush=True)
    if action == "skip":
        if "status" not in read_stamp(run):
            write_stamp(run, fingerprint, "done")  # from now on it vouches for this checkpoint by its hash
        return
    start = time.time()
    if action == "train" and run.folder.exists():
        aside = run.folder.with_name(f"{run.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        print(f"[pipeline] {run.name}: moving the old run to {aside}", flush=True)
        shutil.move(str(run.folder), aside)
    write_stamp(run, fingerprint, "running")
    run_stage(run, action, env, lock_fd)
    write_stamp(run, fingerprint, "done", time.time() - start)


ABLATION_ROWS = {  # Table 2's rows beside the chain's own phase1 (+ L_recon + L_adapt) and phase2 (+ L_ss)
    "phase1_distl": ["--model.init_args.use_recon=false", "--model.init_args.use_adapt=false"],  # L_distl only
    "phase1_recon": ["--model.init_args.use_adapt=false"],  # + L_recon
}
SUPERVISED_ROWS = {  # the paper's Ours-Ws / Ours-Fs: phase 1 plus supervision on the target images' GT
    "ours_ws": ["--model.init_args.use_weak_2d=true"],
    "ours_fs": ["--model.init_args.use_full_3d=true"],
}


def run_variant(
    workdir: Path,
    folder: str,
    stages: dict[str, list[str]],
    preset: str,
    fingerprints: dict[str, str],
    extra: dict[str, list[str]],
    env: dict[str, str],
    lock_fd: int | None = None,
) -> dict[str, Path]:
    """Train ``stages`` (name -> extra overrides, in chain order) in ``<workdir>/<folder>``, chained from the main run.

    The main run's upstream stages are linked into the variant's ``runs/``, so a variant differs from the main run
    only in its overrides.

    Returns each trained stage's checkpoint.
    """
    root = workdir / folder
    (root / "runs").mkdir(parents=True, exist_ok=True)
    first = next(iter(stages))
    for upstream in STAGES[: STAGES.index(first)]:
        link = root / "runs" / upstream
        if not link.exists():
            link.symlink_to(workdir / "runs" / upstream, target_is_directory=True)
    prints, out = dict(fingerprints), {}
    for name, overrides in stages.items():
        label = f"--trainer.logger.init_args.name={folder.replace('/', '_')}_{name}"
        run = StageRun(name, stage_configs(name, preset), [*extra[name], *overrides, label], root)
        prints[name] = run.fingerprint(prints)
        execute(run, prints[name], env, lock_fd)
        out[name] = run.last_ckpt
    return out


def run_ablations(
    workdir: Path, args: Namespace, fingerprints: dict[str, str], extra: dict[str, list[str]], env, lock_fd
) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """The Table 2 ablation rows (``--ablation``), their seeds (``--seeds``) and Ours-Ws/Fs (``--supervised``).

    Seed 0 is the main run (its phase1/phase2 and the ablation rows beside it); seed k > 0 retrains phase1, phase2
    and the ablation rows with ``--seed_everything=k`` (model initialisation, sampling of the L_ss transforms; the
    upstream teacher, AAE and warm-up are shared, so the spread measures what these stages add).

    Returns (extra rows for the main table, {row: [checkpoint per seed]}).
    """
    run = functools.partial(run_variant, preset=args.preset, fingerprints=fingerprints, extra=extra, env=env,
                            lock_fd=lock_fd)  # fmt: skip
    rows: dict[str, Path] = {}
    seeds: dict[str, list[Path]] = {}
    if args.ablation:
        for row, overrides in ABLATION_ROWS.items():
            rows[row] = run(workdir, f"ablation/{row}", {"phase1": overrides})["phase1"]
        seeds = {row: [rows[row]] for row in ABLATION_ROWS}
        seeds |= {stage: [workdir / "runs" / stage / "checkpoints" / "last.ckpt"] for stage in ("phase1", "phase2")}
        for k in range(1, args.seeds):
            seed = [f"--seed_everything={k}"]
            for row, overrides in ABLATION_ROWS.items():
                seeds[row].append(run(workdir, f"ablation/seed{k}/{row}", {"phase1": [*overrides, *seed]})["phase1"])
            main_k = run(workdir, f"ablation/seed{k}/main", {"phase1": seed, "phase2": seed})
            seeds["phase1"].append(main_k["phase1"])
            seeds["phase2"].append(main_k["phase2"])
    if args.supervised:
        for row, overrides in SUPERVISED_ROWS.items():
            rows[row] = run(workdir, f"supervised/{row}", {"phase1": overrides})["phase1"]
    return rows, seeds


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def build_parser() -> ArgumentParser:
    """The ``mp3d-pipeline`` parser (jsonargparse: ``--config`` files and ``--print_config``, argparse's flags)."""
    parser = command_parser("mp3d-pipeline", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset",
        type=Literal[PRESETS],
        default="tiny",
        help="tiny: a 2-core CPU in <= 15 min; cpu: <= 60 min, the student learns; paper: GPU schedule",
    )
    parser.add_argument("--workdir", type=Path, default=Path("."), help="folder holding runs/ and results/")
    parser.add_argument(
        "--stages", type=str, default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES)
    )
    parser.add_argument("--skip-eval", **FLAG, help="train only; no results table")
    parser.add_argument(
        "--wandb",
        type=Literal["offline", "online", "disabled"] | None,
        default=None,
        help="W&B mode for every stage (default: $WANDB_MODE or offline)",
    )
    parser.add_argument(
        "--extra",
        action="append",  # repeatable, each value verbatim (untyped: jsonargparse would read STAGE:ARG as YAML)
        default=[],
        metavar="STAGE:ARG",
        help="extra 'lightning fit' argument for one stage or 'all', e.g. --extra=all:--trainer.max_epochs=1 "
        "(part of the stage's fingerprint; repeatable; in a config file a list)",
    )
    parser.add_argument(
        "--ablation",
        **FLAG,
        help="also run Table 2's rows: phase 1 with L_distl only (as long as phase 1) and without L_adapt",
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="with --ablation: seeds per row (mean +- std in the report)"
    )
    parser.add_argument("--supervised", **FLAG, help="also run Ours-Ws / Ours-Fs (phase 1 + L_2D / L_3D on target GT)")
    parser.add_argument("--eval-images", type=int, default=128, help="size of the held-out target test set")
    return parser


def parse_args(argv: list[str] | None) -> Namespace:
    """The ``mp3d-pipeline`` command line parsed by ``build_parser``."""
    return build_parser().parse_args(argv)


def parse_extra(items: list[str]) -> dict[str, list[str]]:
    """``["all:--a=1", "aae:--b=2"]`` -> per-stage argument lists (``all`` applies to every stage)."""
    extra: dict[str, list[str]] = {name: [] for name in STAGES}
    if not isinstance(items, list):  # from a config file: extra: "all:--x" instead of a list
        raise SystemExit(f"extra in a config file is a list of STAGE:ARG strings; got {items!r}")
    for item in items:
        stage, sep, arg = item.partition(":") if isinstance(item, str) else ("", "", "")
        if not sep or (stage != "all" and stage not in STAGES):
            raise SystemExit(f"--extra expects STAGE:ARG with STAGE in all,{','.join(STAGES)}; got {item!r}")
        for name in STAGES if stage == "all" else (stage,):
            extra[name].append(arg)
    return extra


def main(argv: list[str] | None = None) -> int:
    """``mp3d-pipeline``: train, resume or skip each stage and the requested variants, then write the results table."""
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
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM: stop the stage cleanly, as Ctrl+C does
    try:
        with workdir_lock(workdir) as lock_fd:
            fingerprints = run_chain(workdir, args.preset, stages, extra, env, lock_fd)
            extra_rows, seed_rows = run_ablations(workdir, args, fingerprints, extra, env, lock_fd)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"[pipeline] stages done in {time.time() - start:.0f} s", flush=True)
    evaluable = [
        s
        for s in ("teacher", "distill", "phase1", "phase2", "refine")
        if (workdir / "runs" / s / "checkpoints" / "last.ckpt").is_file()
    ]
    if not args.skip_eval and not evaluable:
        print(
            "[pipeline] evaluation skipped: the results table needs the teacher or a student stage "
            "(distill, phase1, phase2) and none is trained yet",
            flush=True,
        )
    elif not args.skip_eval:
        from lightning_mp3d.report import evaluate_chain

        evaluate_chain(
            workdir / "runs", workdir / "results", args.preset, num_images=args.eval_images, extra_rows=extra_rows,
            seed_rows=seed_rows,
        )  # fmt: skip
    return 0


__all__ = [
    "ABLATION_ROWS",
    "CONFIG_DIR",
    "LOCK_NAME",
    "PRESETS",
    "PRESET_LAYERS",
    "STAGES",
    "STOP_GRACE_S",
    "SUPERVISED_ROWS",
    "StageRun",
    "UPSTREAM",
    "build_parser",
    "execute",
    "file_sha256",
    "lightning_command",
    "main",
    "parse_args",
    "parse_extra",
    "plan_action",
    "read_stamp",
    "run_ablations",
    "run_chain",
    "run_stage",
    "run_variant",
    "stage_configs",
    "stop_stage",
    "workdir_lock",
    "write_stamp",
]


if __name__ == "__main__":
    raise SystemExit(main())
