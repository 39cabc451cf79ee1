"""Where a phase-1 and a phase-2 training step spend their time (issue 15, goal 2).

Builds the stages the way LightningCLI does from ``configs/`` (the preset's YAMLs merged: ``stage_*.yaml`` then
``<preset>/stage_*.yaml``): the teacher from the stage-0 config (``TeacherPretraining``'s ``EmbeddedTeacher``), Psi
from the AAE config (``AAEPretraining``'s decoder), then ``Phase1Alignment`` / ``Phase2SelfSupervised`` with the
stage config's ``model.init_args`` and G, H, M created as ``CrossModalStage.build`` does (untrained weights: time
does not depend on them, except the grouping, which is timed on the teacher maps it gets). One step runs the
system's own pathway methods (``recon_losses``, ``adapt_loss``, ``distill_losses``, ``ss_losses``), and each
optimizer as ``run_optimizer`` does, minus Lightning's toggling (goal 1 measures Lightning):

- data: a D_syn batch (``make_dsyn_batch`` as ``DSynDataset`` makes it) and a rendered D_I batch
  (``synthetic_batch``, the ``ImageDataModule`` stream), made on ``--device``;
- per pathway, exclusive (self) times of: teacher E (``encode``), teacher F (``decode``), grouping
  (``Teacher.group`` minus its F), G, H, M (scene decoder) forwards, the rest of the forward (losses, targets,
  warps: ``loss/other``), backward, optimizer (zero_grad + step).

Sections synchronise the device at their ends (on CPU that is free). A final row times whole steps without sections.

The grouping before issue 15 was timed alongside the current one (alternating steps, so both breakdowns saw the same
machine load); those timings stay recorded under ``"reference (before issue 15)"`` in
``benchmarks/results/bench_step_tiny_cpu.json``. That grouping now lives only in ``tests/test_grouping_batched.py``,
as the oracle the batched one is tested against; the benchmark no longer imports it from the tests.

    OMP_NUM_THREADS=1 python benchmarks/bench_step.py --preset tiny --device cpu --batch 8 --steps 6 \
        --out benchmarks/results/bench_step_tiny_cpu.json
    python benchmarks/bench_step.py --preset paper --device cuda --batch 8 64 --steps 20 \
        --out benchmarks/results/bench_step_paper_cuda.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_mp3d.datamodules.dsyn import make_dsyn_batch
from lightning_mp3d.grouping import group_people
from lightning_mp3d.models import teacher as teacher_module
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import PoseMapEncoder, build_scene_head
from lightning_mp3d.synth.batches import synthetic_batch
from lightning_mp3d.systems import AAEPretraining, Phase1Alignment, Phase2SelfSupervised, TeacherPretraining

ROOT_DIR = Path(__file__).resolve().parents[1]
CONFIGS = ROOT_DIR / "configs"
TEACHER_PARTS = ("teacher E", "teacher F", "grouping")


# ------------------------------------------------------------------------------------------------------------ configs
def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def stage_config(stage: str, preset: str) -> dict[str, Any]:
    """``stage_<stage>.yaml`` merged with ``<preset>/stage_<stage>.yaml`` (``paper``: the base file alone)."""
    config = yaml.safe_load((CONFIGS / f"stage_{stage}.yaml").read_text())
    if preset != "paper":
        config = _merge(config, yaml.safe_load((CONFIGS / preset / f"stage_{stage}.yaml").read_text()))
    return config


def _init_args(config: dict[str, Any]) -> dict[str, Any]:
    """``model.init_args`` with the optimizer / schedule configs turned into callables, as LightningCLI does."""
    args = dict(config["model"].get("init_args") or {})
    for name in ("optimizer", "lr_scheduler", "disc_optimizer"):
        spec = args.get(name)
        if isinstance(spec, dict) and "class_path" in spec:
            module, _, attr = spec["class_path"].rpartition(".")
            args[name] = functools.partial(getattr(importlib.import_module(module), attr), **spec.get("init_args", {}))
    return args


# ------------------------------------------------------------------------------------------------------------ timing
class Breakdown:
    """Exclusive (self) wall time per section label, nested sections subtracted from their parents."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self._children: list[float] = []
        self.prefix = ""

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        self._children.append(0.0)
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - start
            children = self._children.pop()
            self.totals[f"{self.prefix}{name}"] += elapsed - children
            if self._children:
                self._children[-1] += elapsed

    @contextlib.contextmanager
    def pathway(self, name: str) -> Iterator[None]:
        self.prefix = f"{name}/"
        try:
            yield
        finally:
            self.prefix = ""

    def wrap(self, fn: Callable, name: str) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.section(name):
                return fn(*args, **kwargs)

        return timed


# ------------------------------------------------------------------------------------------------------------ stages
def build_stage(cls: type, preset: str, device: torch.device, seed: int = 0, teacher_channels_last: bool = False):
    """A student stage as ``CrossModalStage.build`` makes it, with an untrained teacher and Psi of the preset's
    stage-0 / AAE configs instead of their checkpoints. ``teacher_channels_last``: the frozen teacher's weights and
    input images in channels_last (an experiment: not what the stages do today; v differs by float rounding)."""
    torch.manual_seed(seed)
    stage_name = {Phase1Alignment: "phase1", Phase2SelfSupervised: "phase2"}[cls]
    config = stage_config(stage_name, preset)
    stage = cls(**_init_args(config))
    hp = stage.hparams
    stage.teacher = TeacherPretraining(**_init_args(stage_config("teacher", preset))).teacher.freeze()
    psi = AAEPretraining(**_init_args(stage_config("aae", preset))).pose_decoder
    stage.scene_decoder = SceneDecoder(psi, depth_scale_mm=hp.depth_scale_mm)
    v_channels = int(stage.teacher.v_channels)
    stage.g = PoseMapEncoder(v_channels, hidden=hp.g_hidden, **(hp.g_options or {}))
    stage.h = build_scene_head(v_channels, hp)
    stage.freeze_fixed_parts()
    stage._generator = torch.Generator(device=device).manual_seed(int(hp.transform_seed))
    stage.to(device).train()
    if teacher_channels_last:
        teacher = stage.teacher.to(memory_format=torch.channels_last)
        encode = teacher.encode
        teacher.encode = lambda images: encode(images.contiguous(memory_format=torch.channels_last))
    optimizers = [entry["optimizer"] for entry in stage.configure_optimizers()]
    return stage, optimizers, config


def instrument(stage, timer: Breakdown) -> None:
    """Route the stage's parts through ``timer`` sections."""
    teacher = stage.teacher
    teacher.encode = timer.wrap(teacher.encode, "teacher E")
    teacher.decode = timer.wrap(teacher.decode, "teacher F")
    teacher.group = timer.wrap(teacher.group, "grouping")  # its own F is subtracted (nested section)
    for name, label in (("g", "G forward"), ("h", "H forward"), ("scene_decoder", "M forward")):
        module = getattr(stage, name)
        module.forward = timer.wrap(module.forward, label)


def optimize(timer: Breakdown, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """``run_optimizer`` without Lightning's toggling: backward, then the Adam step."""
    with timer.section("backward"):
        opt.zero_grad()
        loss.backward()
    with timer.section("optimizer"):
        opt.step()
        opt.zero_grad()


def recon_pathway(stage, opt, timer: Breakdown, syn) -> None:
    """The D_syn pathway both phases run first: L_recon (+ the root heatmap term), one optimizer step."""
    with timer.pathway("syn recon"):
        with timer.section("loss/other"):
            losses = stage.recon_losses(syn)
            loss = stage.with_root(losses["recon"], losses, "root_syn")
        optimize(timer, opt, loss)


def phase1_step(stage, opts, timer: Breakdown, syn, images) -> None:
    """``Phase1Alignment.training_step``'s work: D_syn pathway (L_recon, then L_adapt), then D_I (L_distl)."""
    from lightning_mp3d.systems.phase1 import ADAPT, DISTL, RECON

    recon_pathway(stage, opts[RECON], timer, syn)
    with timer.pathway("syn adapt"):
        with timer.section("loss/other"):
            loss = stage.adapt_loss(syn)
        optimize(timer, opts[ADAPT], loss)
    with timer.pathway("image distill"):
        with timer.section("loss/other"):
            losses = stage.distill_losses(images)
            loss = stage.with_root(losses["distl"], losses, "root_image")
        optimize(timer, opts[DISTL], loss)


def phase2_step(stage, opts, timer: Breakdown, syn, images, step: int) -> None:
    """``Phase2SelfSupervised.training_step``'s work: D_syn pathway (L_recon on H), then D_I (L_ss)."""
    from lightning_mp3d.datamodules.streams import batch_seed
    from lightning_mp3d.systems.phase2 import RECON, SS

    recon_pathway(stage, opts[RECON], timer, syn)
    with timer.pathway("image ss"):
        with timer.section("loss/other"):
            stage._generator.manual_seed(batch_seed(stage.hparams.transform_seed, 0, step))
            losses = stage.ss_losses(images)
            loss = stage.with_root(losses["ss"], losses, "root_image")
        optimize(timer, opts[SS], loss)


# ------------------------------------------------------------------------------------------------------------ run
def summarise(totals: dict[str, float], steps: int) -> dict[str, Any]:
    """Milliseconds per step by section, by component (summed over pathways) and the teacher's share."""
    per_step = {k: 1e3 * v / steps for k, v in sorted(totals.items())}
    components: dict[str, float] = defaultdict(float)
    for key, ms in per_step.items():
        components[key.split("/", 1)[-1]] += ms
    data = sum(ms for key, ms in per_step.items() if key.startswith("data/"))
    model = sum(ms for key, ms in per_step.items() if not key.startswith("data/"))
    image_teacher = sum(ms for key, ms in per_step.items() if key.startswith("image") and key.endswith(TEACHER_PARTS))
    grouping = components.get("grouping", 0.0)
    return {
        "ms_per_step_by_section": {k: round(v, 3) for k, v in per_step.items()},
        "ms_per_step_by_component": {k: round(v, 3) for k, v in sorted(components.items(), key=lambda kv: -kv[1])},
        "ms_per_step_model": round(model, 3),
        "ms_per_step_data": round(data, 3),
        "ms_per_step_total": round(model + data, 3),
        "ms_teacher_targets": round(image_teacher, 3),  # E + F + grouping on the D_I pathway
        "teacher_fraction_of_model_step": round(image_teacher / model, 4),
        "teacher_fraction_of_step_with_data": round(image_teacher / (model + data), 4),
        "grouping_fraction_of_model_step": round(grouping / model, 4),
        "teacher_E_fraction_of_model_step": round(components.get("teacher E", 0.0) / model, 4) if model else None,
    }


def bench(
    stage_cls: type,
    preset: str,
    batch: int,
    steps: int,
    device: torch.device,
    teacher_channels_last: bool = False,
) -> dict:
    grouping_original = teacher_module.group_people  # each step swaps the teacher's grouping; restored below
    variants: dict[str, Callable] = {"batched": group_people}  # the breakdown's key, as in the recorded results
    runs = {}
    for name in variants:
        stage, opts, config = build_stage(stage_cls, preset, device, teacher_channels_last=teacher_channels_last)
        timer = Breakdown(device)
        instrument(stage, timer)
        runs[name] = (stage, opts, config, timer)
    step_fn = phase1_step if stage_cls is Phase1Alignment else phase2_step
    try:
        for step in range(steps + 1):  # step 0 warms up (allocator, autotuning) and is dropped
            for name, grouping in variants.items():  # alternate: both see the same machine load
                stage, opts, config, timer = runs[name]
                teacher_module.group_people = grouping  # what Teacher.group calls
                if step == 1:
                    timer.totals.clear()
                with timer.section("data/D_syn"):
                    syn = make_dsyn_batch(batch, torch.Generator(device=device).manual_seed(2 + step), device=device)
                with timer.section("data/D_I render"):
                    style = config["data"]["init_args"]["images"].get("style", "target")
                    gen = torch.Generator(device=device).manual_seed(3 + step)
                    images = synthetic_batch(batch, style, gen, device=device)
                if stage_cls is Phase1Alignment:
                    step_fn(stage, opts, timer, syn, images)
                else:
                    step_fn(stage, opts, timer, syn, images, step)
        out = {name: summarise(timer.totals, steps) for name, (*_, timer) in runs.items()}
        # whole steps without sections (the sections' overhead, and a check of their sum)
        stage, opts, config, timer = runs["batched"]
        teacher_module.group_people = grouping_original
        quiet = Breakdown(device)
        quiet.section = lambda name: contextlib.nullcontext()  # type: ignore[method-assign]
        stage.teacher.encode = stage.teacher.encode.__wrapped__
        stage.teacher.decode = stage.teacher.decode.__wrapped__
        stage.teacher.group = stage.teacher.group.__wrapped__
        for name in ("g", "h", "scene_decoder"):
            module = getattr(stage, name)
            module.forward = module.forward.__wrapped__
        seconds = []
        for step in range(steps):
            syn = make_dsyn_batch(batch, torch.Generator(device=device).manual_seed(100 + step), device=device)
            gen = torch.Generator(device=device).manual_seed(200 + step)
            images = synthetic_batch(
                batch, config["data"]["init_args"]["images"].get("style", "target"), gen, device=device
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            if stage_cls is Phase1Alignment:
                step_fn(stage, opts, quiet, syn, images)
            else:
                step_fn(stage, opts, quiet, syn, images, step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
        out["whole step without sections (model only, data excluded)"] = {
            "ms_per_step_median": round(1e3 * sorted(seconds)[len(seconds) // 2], 3),
            "ms_per_step_min": round(1e3 * min(seconds), 3),
        }
        out["GFLOPs per batch"] = forward_gflops(stage, syn, images)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:  # forwards, backwards, all pathways of one step
            step_fn(stage, opts, quiet, syn, images, *(() if stage_cls is Phase1Alignment else (steps,)))
        out["GFLOPs per batch"]["whole step (forward + backward)"] = round(counter.get_total_flops() / 1e9, 3)
        out["grouping alone"] = time_grouping(stage.teacher, images, variants, device, steps)
    finally:
        teacher_module.group_people = grouping_original
    teacher = runs["batched"][0].teacher
    return {
        "stage": "phase1" if stage_cls is Phase1Alignment else "phase2",
        "preset": preset,
        "batch": batch,
        "steps_timed": steps,
        "teacher_channels_last": teacher_channels_last,
        "teacher_width": getattr(teacher, "width", None),
        "v_channels": int(teacher.v_channels),
        "params": {
            name: sum(p.numel() for p in getattr(runs["batched"][0], name).parameters())
            for name in ("teacher", "g", "h")
        },
        "breakdown": out,
    }


def forward_gflops(stage, syn: dict, images: dict) -> dict[str, float]:
    """GFLOPs (torch's FlopCounterMode: 2 per multiply-add) of one forward of each network on this batch."""
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn: Callable) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        return round(counter.get_total_flops() / 1e9, 3)

    with torch.no_grad():
        v = stage.teacher.encode(images["image"])
    return {
        "teacher E": count(lambda: stage.teacher.encode(images["image"])),
        "teacher F": count(lambda: stage.teacher.decode(v)),
        "G": count(lambda: stage.g(syn["maps"])),
        "H": count(lambda: stage.h(v)),
    }


def time_grouping(teacher, images: dict, variants: dict[str, Callable], device: torch.device, reps: int) -> dict:
    """ms per batch of each grouping, alternating, on the teacher's maps of a D_I batch and on the GT maps of its
    scenes (``render_maps`` with visibility: real people, where the old grouping's matching needs more rounds)."""
    from lightning_mp3d.skeleton import NUM_JOINTS
    from lightning_mp3d.synth.maps import render_maps

    with torch.no_grad():
        teacher_maps = teacher.decode(teacher.encode(images["image"]))
    gt = render_maps(images["joints_2d"], images["mask"], visibility=images["visibility"])
    inputs = {"teacher maps": teacher_maps, "GT maps": (gt[:, :NUM_JOINTS], gt[:, NUM_JOINTS:])}
    out: dict[str, dict[str, float]] = {}
    for what, (heat, pafs) in inputs.items():
        seconds: dict[str, list[float]] = defaultdict(list)
        for rep in range(reps + 1):
            for name, grouping in variants.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                people = grouping(heat, pafs, image_size=teacher.image_size, **teacher.grouping_kwargs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if rep:
                    seconds[name].append(time.perf_counter() - start)
        out[what] = {name: round(1e3 * sorted(v)[len(v) // 2], 3) for name, v in seconds.items()}
        out[what]["people_found"] = int(people.mask.sum())
    return out


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": list(os.getloadavg()),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="tiny, cpu or paper (configs/<preset>/ overrides)")
    parser.add_argument("--stage", nargs="+", default=["phase1", "phase2"], choices=["phase1", "phase2"])
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--teacher-channels-last", action="store_true", help="experiment: the frozen teacher in channels_last"
    )
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    result: dict[str, Any] = {"machine": machine_info(device), "runs": []}
    classes = {"phase1": Phase1Alignment, "phase2": Phase2SelfSupervised}
    for stage in args.stage:
        for batch in args.batch:
            row = bench(
                classes[stage],
                args.preset,
                batch,
                args.steps,
                device,
                args.teacher_channels_last,
            )
            result["runs"].append(row)
            print(json.dumps(row, indent=2), flush=True)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
