"""Lightning overhead of every training stage: ``lightning fit`` against a plain PyTorch loop on the same batches.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_lightning.py --sizes tiny [--stages aae phase1 ...]
        [--rounds 4] [--batches 20] [--warmup 3] [--profile phase1]

For each stage (teacher, aae, distill, phase1, phase2, refine) and size (``tiny``: ``configs/stage_<s>.yaml`` +
``configs/tiny/stage_<s>.yaml``; ``default``: the stage config alone):

- **Lightning** (A): ``cli_main([...], run=False)`` builds the stage exactly as ``lightning fit`` does: the
  LightningModule, datamodule, Trainer with the config's callbacks (FiniteGuard, LastCheckpoint), logger (W&B
  offline) and progress bar. Two things change: the datamodule's training loader replays pre-generated batches (data
  generation would be the same on both sides and is measured by bench_render.py / bench_synth.py), and validation is
  off (``limit_val_batches=0``). A callback stamps the wall and process-CPU clocks at every ``on_train_batch_end``:
  the difference of two stamps is one batch of the whole loop (data fetch, hooks, ``training_step`` with its logging,
  callbacks); ``on_train_batch_start`` -> ``_end`` is the step alone.
- **Plain** (B): the same stage's networks, loss methods and optimizers/schedulers (``configure_optimizers``) of a
  second instance of the module, in a ``for`` loop that repeats ``training_step``'s updates without logging,
  toggling or callbacks.

Rounds alternate A and B (A/B/A/B) so that the shared machine's load falls on both; each round times ``batches``
batches after ``warmup``. Reported per round: per-batch median wall and CPU seconds, the Lightning/plain ratios and
the 1-minute load average; per stage the median of the round ratios. The stages chain: each Lightning run writes its
``last.ckpt``, the next stage initialises from it (a missing upstream checkpoint is made by a one-batch fit first).
JSON: ``benchmarks/results/bench_lightning_<size>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback

from lightning_mp3d.cli import cli_main
from lightning_mp3d.datamodules.streams import batch_seed
from lightning_mp3d.geometry.pose import forward_kinematics, to_local
from lightning_mp3d.losses.aae import cycle_loss, discriminator_loss, generator_loss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGES = ("teacher", "aae", "distill", "phase1", "phase2", "refine")
UPSTREAM = {"distill": None, "phase1": "distill", "phase2": "phase1", "refine": "phase2"}
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------------------- building
def cli_args(stage: str, size: str, root: Path, extra: list[str] = ()) -> list[str]:
    """``lightning fit`` arguments (less the subcommand) of ``stage`` at ``size`` writing into ``root/<stage>``: one
    epoch, no validation."""
    folder = root / stage
    args = [f"--config={CONFIGS / f'stage_{stage}.yaml'}"]  # run=False: no subcommand
    if size == "tiny":
        args.append(f"--config={CONFIGS / 'tiny' / f'stage_{stage}.yaml'}")
    args += [
        f"--trainer.default_root_dir={folder}",
        f"--trainer.logger.init_args.save_dir={folder}",
        f"--trainer.callbacks.init_args.dirpath={folder / 'checkpoints'}",
        "--trainer.accelerator=cpu",
        "--trainer.max_steps=-1",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
    ]
    if stage in UPSTREAM:
        args += [
            f"--model.init_args.teacher_checkpoint={root / 'teacher' / 'checkpoints' / 'last.ckpt'}",
            f"--model.init_args.aae_checkpoint={root / 'aae' / 'checkpoints' / 'last.ckpt'}",
            "--model.init_args.val_figures=false",
        ]
        up = UPSTREAM[stage]
        args.append(f"--model.init_args.init_from={root / up / 'checkpoints' / 'last.ckpt' if up else 'null'}")
    return args + list(extra)


def upstream_checkpoints(stage: str) -> list[str]:
    """The stages whose ``last.ckpt`` ``stage`` reads."""
    if stage not in UPSTREAM:
        return []
    return ["teacher", "aae"] + ([UPSTREAM[stage]] if UPSTREAM[stage] else [])


class Replay:
    """A training 'loader' replaying a fixed list of batches (not a list: CombinedLoader would treat a list's items as
    separate loaders)."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class BatchClock(Callback):
    """Wall and process-CPU stamps at every training batch start and end."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.ends.append((time.perf_counter(), time.process_time()))


def build(stage: str, size: str, root: Path, extra: list[str] = ()):
    """The LightningCLI of ``stage`` (not run)."""
    return cli_main(cli_args(stage, size, root, extra), run=False)


def pregenerate(stage: str, size: str, root: Path, n: int) -> list[Any]:
    """``n`` training batches from the stage's own datamodule (as its loader yields them)."""
    dm = build(stage, size, root).datamodule
    dm.setup("fit")
    loader, out = dm.train_dataloader(), []
    while len(out) < n:
        for item in loader:
            if isinstance(item, tuple) and len(item) == 3 and isinstance(item[1], int):  # CombinedLoader: (b, idx, i)
                item = item[0]
            out.append(item)
            if len(out) == n:
                break
    return out


# ---------------------------------------------------------------------------------------------------- the two sides
def _drop_callbacks(cli, kinds: tuple[type, ...]) -> None:
    cli.trainer.callbacks[:] = [cb for cb in cli.trainer.callbacks if not isinstance(cb, kinds)]


def _no_project_callbacks(cli) -> None:
    from lightning_mp3d.callbacks.checkpoint import LastCheckpoint
    from lightning_mp3d.callbacks.finite import FiniteGuard

    _drop_callbacks(cli, (FiniteGuard, LastCheckpoint))


def _no_self_log(cli) -> None:
    cli.model.log = lambda *args, **kwargs: None
    cli.model.log_dict = lambda *args, **kwargs: None


# Lightning runs with one piece taken away, to attribute the overhead (``--ablations``): CLI overrides or a mutation
# of the built CLI.
ABLATIONS: dict[str, tuple[list[str], Callable | None]] = {
    "no_progress_bar": (["--trainer.enable_progress_bar=false"], None),
    "no_logger": (["--trainer.logger=false"], None),
    "no_guard_ckpt": ([], _no_project_callbacks),
    "no_self_log": ([], _no_self_log),
    "bare": (
        ["--trainer.enable_progress_bar=false", "--trainer.logger=false"],
        lambda cli: (_no_project_callbacks(cli), _no_self_log(cli)),
    ),
}


def run_lightning(
    stage: str, size: str, root: Path, batches: list[Any], profile: bool = False, ablation: str | None = None
) -> dict[str, Any]:
    """One ``trainer.fit`` over ``batches``; the clock stamps (and a cProfile text when ``profile``)."""
    extra, mutate = ABLATIONS[ablation] if ablation else ([], None)
    cli = build(stage, size, root, extra)
    if mutate:
        mutate(cli)
    clock = BatchClock()
    cli.trainer.callbacks.insert(0, clock)
    cli.datamodule.train_dataloader = lambda: Replay(batches)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if profiler:
        profiler.disable()
    from lightning_mp3d.cli import finish_wandb

    finish_wandb()
    out = {"ends": clock.ends, "starts": clock.starts}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(60)
        out["profile"] = text.getvalue()
    return out


def plain_stepper(stage: str, model: Any) -> Callable[[Any, int], None]:
    """A function (batch, index) -> None doing ``training_step``'s updates of ``model`` without Lightning."""
    config = model.configure_optimizers()
    items = config if isinstance(config, (list, tuple)) else [config]
    opts = [c["optimizer"] if isinstance(c, dict) else c for c in items]
    scheds = [c["lr_scheduler"]["scheduler"] for c in items if isinstance(c, dict) and "lr_scheduler" in c]

    def update(index: int, loss: torch.Tensor) -> None:
        opts[index].zero_grad()
        loss.backward()
        opts[index].step()
        opts[index].zero_grad()

    def schedule() -> None:
        for sched in scheds:
            sched.step()

    hp = model.hparams
    if stage == "teacher":

        def step(batch, i):
            loss, _ = model._loss(batch)
            update(0, loss.total)
            schedule()

    elif stage == "aae":

        def step(p_c, i):
            p_l = to_local(p_c)
            phi = model.sample_prior(p_c.shape[0], torch.Generator().manual_seed(batch_seed(hp.prior_seed, 0, 3 * i)))
            model.discriminator.requires_grad_(False)
            p_l_prior = model.pose_decoder(phi)
            fk = forward_kinematics(model.pose_decoder(model.encoder(p_l)))
            cyc = cycle_loss(p_c, fk, phi, model.encoder(p_l_prior), hp.pose_unit_mm)
            adv = generator_loss(model.discriminator(p_l_prior))
            (cyc.total + hp.adv_weight * adv + model.joint_limit.weight * model.limit_loss(p_l_prior)).backward()
            model.discriminator.requires_grad_(True)
            for opt in opts[:2]:
                opt.step()
                opt.zero_grad(set_to_none=True)
            discriminator_loss(model.discriminator(p_l), model.discriminator(p_l_prior.detach())).backward()
            opts[2].step()
            opts[2].zero_grad(set_to_none=True)

    elif stage == "distill":

        def step(batch, i):
            losses = model.distill_losses(batch)
            update(0, model.with_root(losses["distl"], losses, "root_image"))
            schedule()

    elif stage == "phase1":

        def step(batch, i):
            syn = batch["syn"]
            if hp.use_recon:
                losses = model.recon_losses(syn)
                update(0, model.with_root(losses["recon"], losses, "root_syn"))
            if hp.use_adapt:
                update(2, model.adapt_loss(syn))
            schedule()
            losses = model.distill_losses(batch["image"])
            update(1, model.with_root(losses["distl"], losses, "root_image"))
            schedule()

    elif stage in ("phase2", "refine"):
        crops = stage == "refine"

        def step(batch, i):
            syn = model.syn_crops(batch["syn"]) if crops else batch["syn"]
            if hp.use_recon and len(syn["maps"]):
                losses = model.recon_losses(syn)
                update(0, model.with_root(losses["recon"], losses, "root_syn"))
            schedule()
            if hp.use_ss:
                model._generator.manual_seed(batch_seed(hp.transform_seed, 0, 2 * i))
                images = model.image_crops(batch["image"]) if crops else batch["image"]
                if len(images["image"]):
                    losses = model.ss_losses(images)
                    update(1, model.with_root(losses["ss"], losses, "root_image"))
            schedule()

    else:
        raise ValueError(f"unknown stage {stage!r}")
    return step


def run_plain(stage: str, size: str, root: Path, batches: list[Any]) -> dict[str, Any]:
    """The plain loop over ``batches`` with a fresh instance of the stage's module."""
    model = build(stage, size, root).model
    if hasattr(model, "build"):
        model.setup("fit")
    model.train()
    step = plain_stepper(stage, model)
    ends = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
        for i, batch in enumerate(batches):
            step(batch, i)
            ends.append((time.perf_counter(), time.process_time()))
    return {"ends": ends}


# ---------------------------------------------------------------------------------------------------- statistics
def per_batch(ends: list[tuple[float, float]], warmup: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each batch after ``warmup`` (differences of consecutive end stamps)."""
    timed = ends[warmup - 1 :]
    wall = [b[0] - a[0] for a, b in zip(timed, timed[1:])]
    cpu = [b[1] - a[1] for a, b in zip(timed, timed[1:])]
    return wall, cpu


def step_only(starts: list, ends: list, warmup: int) -> list[float]:
    return [e[0] - s[0] for s, e in list(zip(starts, ends))[warmup:]]


def ensure_upstream(stage: str, size: str, root: Path, made: set[str]) -> None:
    """Make the checkpoints ``stage`` reads with one-batch fits (recursively) when no earlier stage wrote them."""
    for up in upstream_checkpoints(stage):
        if not (root / up / "checkpoints" / "last.ckpt").is_file():
            ensure_upstream(up, size, root, made)
            run_lightning(up, size, root, pregenerate(up, size, root, 1))
            made.add(up)


def bench_stage(
    stage: str, size: str, root: Path, rounds: int, n: int, warmup: int, profile: bool, ablations: list[str] = ()
) -> dict[str, Any]:
    ensure_upstream(stage, size, root, set())
    t0 = time.perf_counter()
    batches = pregenerate(stage, size, root, warmup + n)
    gen_s = time.perf_counter() - t0
    rows, lightning_all, plain_all = [], [], []
    for r in range(rounds):
        load0 = os.getloadavg()[0]
        a = run_lightning(stage, size, root, batches)
        b = run_plain(stage, size, root, batches)
        load1 = os.getloadavg()[0]
        lw, lc = per_batch(a["ends"], warmup)
        pw, pc = per_batch(b["ends"], warmup)
        lightning_all += lw
        plain_all += pw
        row = {
            "round": r,
            "load_1min": [round(load0, 2), round(load1, 2)],
            "lightning_ms": round(1e3 * statistics.median(lw), 3),
            "plain_ms": round(1e3 * statistics.median(pw), 3),
            "ratio": round(statistics.median(lw) / statistics.median(pw), 3),
            "lightning_cpu_ms": round(1e3 * statistics.median(lc), 3),
            "plain_cpu_ms": round(1e3 * statistics.median(pc), 3),
            "cpu_ratio": round(statistics.median(lc) / max(statistics.median(pc), 1e-9), 3),
            "lightning_step_only_ms": round(1e3 * statistics.median(step_only(a["starts"], a["ends"], warmup)), 3),
        }
        for name in ablations:  # after the A/B pair, in the same round
            vw, _ = per_batch(run_lightning(stage, size, root, batches, ablation=name)["ends"], warmup)
            row[f"{name}_ms"] = round(1e3 * statistics.median(vw), 3)
        rows.append(row)
        print(f"  {size:7s} {stage:8s} round {r}: {json.dumps(row)}", flush=True)
    result = {
        "stage": stage,
        "size": size,
        "timed_batches_per_round": n,
        "warmup": warmup,
        "pregenerate_s": round(gen_s, 2),
        "ratio_median": round(statistics.median(r["ratio"] for r in rows), 3),
        "cpu_ratio_median": round(statistics.median(r["cpu_ratio"] for r in rows), 3),
        "lightning_ms_median": round(1e3 * statistics.median(lightning_all), 3),
        "plain_ms_median": round(1e3 * statistics.median(plain_all), 3),
        "overhead_ms_median": round(1e3 * (statistics.median(lightning_all) - statistics.median(plain_all)), 3),
        "rounds": rows,
    }
    if profile:
        result["profile_top"] = run_lightning(stage, size, root, batches, profile=True)["profile"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=("tiny", "default"), default=["tiny"])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--rounds", type=int, default=4, help="A/B pairs")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per run")
    parser.add_argument("--aae-batches", type=int, default=200, help="timed batches per run of the (fast) aae stage")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches at the start of each run (>= 1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", nargs="*", default=[], help="stages to profile (cProfile of one Lightning run)")
    parser.add_argument(
        "--ablations",
        nargs="*",
        default=[],
        choices=sorted(ABLATIONS),
        help="also time Lightning without one piece each (attribution)",
    )
    parser.add_argument("--root", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default: results/bench_lightning_<size>.json)"
    )
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first batch's end stamp starts the clock)")
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench_lightning_") if args.root is None else None
    base = Path(tmp.name) if tmp else args.root
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        os.environ.setdefault(var, str(base / "wandb"))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    report: dict[str, Any] = {}
    try:
        for size in args.sizes:
            root = base / size
            stages = [s for s in STAGES if s in args.stages]
            out = {
                "benchmark": "lightning_overhead",
                "size": size,
                "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "threads": args.threads,
                "torch": torch.__version__,
                "load_1min_start": round(os.getloadavg()[0], 2),
                "stages": {},
            }
            for stage in stages:
                out["stages"][stage] = bench_stage(
                    stage,
                    size,
                    root,
                    args.rounds,
                    args.aae_batches if stage == "aae" else args.batches,
                    args.warmup,
                    stage in args.profile,
                    args.ablations,
                )
            out["load_1min_end"] = round(os.getloadavg()[0], 2)
            path = args.out if args.out and len(args.sizes) == 1 else RESULTS / f"bench_lightning_{size}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=2) + "\n")
            summary = {s: (v["ratio_median"], v["lightning_ms_median"], v["plain_ms_median"])
                       for s, v in out["stages"].items()}  # fmt: skip
            print(f"{size}: stage -> (ratio, lightning ms/batch, plain ms/batch) {json.dumps(summary)} -> {path}")
            report[size] = out
    finally:
        if tmp:
            tmp.cleanup()
    return report


if __name__ == "__main__":
    main()
