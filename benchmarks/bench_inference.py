"""Inference throughput of the estimator E -> H -> root NMS -> M, and its parameter count.

Two model sizes: ``paper`` (the OpenPose teacher's E with C_v = 1152, H at width 256 as the stage defaults) and
``tiny`` (the embedded width-1/8 teacher and width-32 H of the tiny preset). Weights are random: speed does not
depend on them. Reports images/s at batch 1 and over a batch sweep (best batch), eager fp32, and on CUDA also bf16
autocast + channels_last and a CUDA-graph'd batch 1. Also a top-down cost model: a per-person-crop baseline runs one
single-person network per detected person, so its cost grows with the number of people while ours does not.

Two-stage refinement H' (paper Fig. 6, ``PoseEstimator(refine=True)``): measured by number of people per image (stage 1
at threshold 0 reports exactly ``max_people`` people), alternating with the single-shot mode (``paired_rates``; on CPU
in process CPU time); every crop of a batch goes through E and H' in one call, so the cost grows with the people, like
the top-down model above.

End to end against the raw network (issue 15 goal 4): per size, batch and variant, alternately, the raw
network E -> H (``PoseEstimator.scene``) and the whole path E -> H -> NMS -> M -> JSON-ready records
(``prediction_records``); ``e2e_over_raw`` is the ratio of their throughputs (goal: >= 0.9). Variants: fp32 (NCHW,
the former default), ``channels_last`` (the default), ``bf16`` (autocast on E and H), ``compiled``
(``compile_decoder``: torch.compile of NMS + M; its one-off compile time is in ``setup_s``) and their combinations.
On CPU every timing runs on one thread and the clock is the process's CPU time (robust to other jobs on a shared
machine, see ``paired_rates``); each timing repeats the call to last >= 0.25 s (batch 1 of the tiny model is not timer
noise); reported: best of ``--e2e-rounds`` alternating rounds, and the median over rounds of the ratio of a round's
adjacent timings; and, from the two parts timed separately (``post``: NMS -> M -> records on H's output),
``e2e_over_raw_from_parts`` = raw / (raw + post), the least noisy estimate on a loaded machine. The refinement timings
below use the default estimator.
``fp32_img_per_s`` is the end-to-end fp32 row of that section.

    OMP_NUM_THREADS=1 python benchmarks/bench_inference.py --sizes tiny paper --batches 1 32 --people 1 2 4 8
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from lightning_mp3d.inference import CUDAGraphEstimator, PoseEstimator, prediction_records
from lightning_mp3d.models.aae import PoseDecoder
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import SceneHead
from lightning_mp3d.models.teacher import EmbeddedTeacher, OpenPoseTeacher

SIZES = {"tiny": {"width": 0.125, "h_width": 32, "h_fc": 32}, "paper": {"width": None, "h_width": 256, "h_fc": 128}}


VARIANTS = {
    "fp32": {"channels_last": False},
    "channels_last": {"channels_last": True},
    "bf16": {"amp_dtype": torch.bfloat16, "channels_last": False},
    "bf16_channels_last": {"amp_dtype": torch.bfloat16, "channels_last": True},
    "compiled": {"compile_decoder": True, "channels_last": False},
    "channels_last_compiled": {"channels_last": True, "compile_decoder": True},
    "bf16_channels_last_compiled": {"amp_dtype": torch.bfloat16, "channels_last": True, "compile_decoder": True},
}


def build(size: str, **options) -> PoseEstimator:
    """Random weights (speed does not depend on them), threshold 0 (every slot a person: the most work for M)."""
    cfg = SIZES[size]
    torch.manual_seed(0)
    teacher = (OpenPoseTeacher() if cfg["width"] is None else EmbeddedTeacher(width=cfg["width"])).freeze()
    head = SceneHead(teacher.v_channels, width=cfg["h_width"], fc_channels=cfg["h_fc"])
    return PoseEstimator(
        teacher,
        head,
        SceneDecoder(PoseDecoder()),
        threshold=0.0,
        max_people=8,
        refine_head=copy.deepcopy(head),
        **options,
    )


def end_to_end(size: str, batches: list[int], variants: list[str], device: str, rounds: int) -> dict:
    """Raw E -> H vs E -> H -> NMS -> M -> records, per batch and variant, timed alternately (module docstring)."""
    cuda = device.startswith("cuda")
    clock = time.perf_counter if cuda else time.process_time
    threads = torch.get_num_threads()
    torch.set_num_threads(threads if cuda else 1)
    models, rows = {}, {}
    for name in variants:
        start = time.perf_counter()
        models[name] = build(size, **VARIANTS[name]).to(device)
        models[name].refine_head = None
        with torch.no_grad():  # warm-up (and, for "compiled", the compile itself)
            prediction_records(models[name](torch.rand(batches[0], 3, 224, 224, device=device)))
        rows[name] = {"setup_s": round(time.perf_counter() - start, 1)}
    for b in batches:
        images = torch.rand(b, 3, 224, 224, device=device, generator=torch.Generator(device).manual_seed(b))
        times = {(n, k): [] for n in variants for k in ("raw", "e2e", "post")}
        with torch.no_grad():
            start = clock()
            models[variants[0]].scene(images)  # warm-up, and the repeat count of every timing at this batch
            calls = max(1, round(0.25 / max(clock() - start, 1e-6)))
            for r in range(rounds + 1):  # round 0 warms up this batch size
                for name in variants:
                    model = models[name]
                    s = model.scene(images)
                    kinds = (
                        ("raw", model.scene),
                        ("e2e", lambda x, m=model: prediction_records(m(x))),
                        ("post", lambda x, m=model, s=s: prediction_records(
                            m._decode(s, m.scene_decoder, m.threshold, m.max_people, m.subcell))),
                    )  # fmt: skip
                    for kind, fn in kinds:
                        sync(device)
                        start = clock()
                        for _ in range(calls):
                            fn(images)
                        sync(device)
                        if r:
                            times[name, kind].append((clock() - start) / calls)
        for name in variants:
            raw, e2e = times[name, "raw"], times[name, "e2e"]
            ratios = sorted(a / b_ for a, b_ in zip(raw, e2e, strict=True))  # per round: adjacent timings
            rows[name][b] = {
                "raw_img_per_s": round(b / min(raw), 2),
                "e2e_img_per_s": round(b / min(e2e), 2),
                "e2e_over_raw": round(min(raw) / min(e2e), 3),  # best against best
                "e2e_over_raw_median_of_rounds": round(statistics.median(ratios), 3),
                # the same path timed in its two parts, E -> H and NMS -> M -> records on H's output: the small part
                # is not buried in the big part's noise on a loaded machine
                "post_ms_per_batch": round(1e3 * min(times[name, "post"]), 3),
                "e2e_over_raw_from_parts": round(min(raw) / (min(raw) + min(times[name, "post"])), 3),
                "calls_per_timing": calls,
            }
    for name in variants:  # does the option win against the default, end to end, at every batch?
        if name != "fp32" and "fp32" in rows:
            gains = {b: round(rows[name][b]["e2e_img_per_s"] / rows["fp32"][b]["e2e_img_per_s"], 3) for b in batches}
            rows[name]["e2e_speedup_over_fp32"] = gains
    torch.set_num_threads(threads)
    return {"clock": "wall" if cuda else "process CPU time, 1 thread", "rounds": rounds, "variants": rows}


def count_params(model: PoseEstimator) -> dict[str, int]:
    """Parameters the inference path uses: E (not F), H, Ψ."""
    enc = model.encoder
    used_e = sum(p.numel() for n, p in enc.named_parameters() if not _is_decoder_param(n))
    h = sum(p.numel() for p in model.head.parameters())
    psi = sum(p.numel() for p in model.scene_decoder.parameters())
    return {"E": used_e, "H": h, "Psi": psi, "total": used_e + h + psi}


def _is_decoder_param(name: str) -> bool:
    """F = conv5_5 of both stage-1 branches and all of stage 2 (OpenPose names, shared by the embedded teacher)."""
    return "conv5_5" in name or "stage2" in name


def time_batches(model: torch.nn.Module, batch: int, device: str, seconds: float, dtype=None, channels_last=False):
    images = torch.rand(batch, 3, 224, 224, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast(device_type=device.split(":")[0], dtype=dtype) if dtype else torch.no_grad()
    with torch.no_grad(), ctx:
        model(images)  # warm-up
        sync(device)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 2:
            model(images)
            n += 1
        sync(device)
    return n * batch / (time.perf_counter() - start)


def paired_rates(model: PoseEstimator, batch: int, people: int, device: str, rounds: int) -> tuple[float, float]:
    """(single-shot, refined) images per second with ``people`` per image, timed alternately ``rounds`` times, best of
    each. On CPU they run on one thread and the clock is this process's CPU time: a machine shared with other jobs
    stretches the wall clock (and makes idle OpenMP threads spin), not the work done; on CUDA it is the wall clock.
    """
    cuda = device.startswith("cuda")
    clock = time.perf_counter if cuda else time.process_time
    threads = torch.get_num_threads()
    torch.set_num_threads(threads if cuda else 1)
    images = torch.rand(batch, 3, 224, 224, device=device)
    best = [float("inf"), float("inf")]
    model.max_people = people
    with torch.no_grad():
        for r in range(rounds + 1):
            for i, refine in enumerate((False, True)):
                model.refine = refine
                sync(device)
                start = clock()
                model(images)
                sync(device)
                if r:  # round 0 warms up
                    best[i] = min(best[i], clock() - start)
    model.refine, model.max_people = False, 8
    torch.set_num_threads(threads)
    return round(batch / best[0], 2), round(batch / best[1], 2)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cuda_graph_batch1(model: PoseEstimator, device: str, seconds: float) -> float:
    """Batch-1 img/s of ``inference.CUDAGraphEstimator`` under bf16 autocast, after checking replay equals eager."""
    static = torch.rand(1, 3, model.image_size, model.image_size, device=device)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        graphed = CUDAGraphEstimator(model, batch_size=1)  # captured under autocast: the graph holds bf16 kernels
        eager = model(static)
    for replayed, reference in zip(graphed(static), eager, strict=True):
        torch.testing.assert_close(replayed, reference)  # the GPU check a CPU-only test suite cannot make
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        graphed(static)
        n += 1
    sync(device)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "paper"], choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--people", nargs="+", type=int, default=[1, 2, 4, 8], help="people per image, refined mode")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timings per number of people")
    parser.add_argument("--refine-batch", type=int, default=None, help="batch of the paired timings (default: best)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))  # fp32 first
    parser.add_argument("--e2e-rounds", type=int, default=5, help="alternating rounds of the end-to-end section")
    parser.add_argument("--no-refine", action="store_true", help="skip the two-stage refinement timings")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/results/bench_inference.json")
    args = parser.parse_args()
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    results = {
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs on the machine slow every number here
        "sizes": {},
    }
    results["cpu_model"] = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    for size in args.sizes:
        model = build(size).to(args.device)
        entry = {"params": count_params(model)}
        entry["end_to_end"] = end_to_end(size, args.batches, args.variants, args.device, args.e2e_rounds)
        fp32 = entry["end_to_end"]["variants"].get("fp32", {})
        entry["fp32_img_per_s"] = {b: fp32[b]["e2e_img_per_s"] for b in args.batches if b in fp32}
        print(size, json.dumps(entry["end_to_end"]), flush=True)
        if not entry["fp32_img_per_s"]:  # fp32 not among the variants
            rates = {b: round(time_batches(model, b, args.device, args.seconds), 2) for b in args.batches}
            entry["fp32_img_per_s"] = rates
        best = max(entry["fp32_img_per_s"], key=entry["fp32_img_per_s"].get)
        entry["best_batch"] = best
        if args.device.startswith("cuda"):
            cl = model.to(memory_format=torch.channels_last)
            entry["bf16_channels_last_img_per_s"] = {
                b: round(time_batches(cl, b, args.device, args.seconds, torch.bfloat16, True), 2) for b in args.batches
            }
            entry["cuda_graph_bf16_batch1_img_per_s"] = round(cuda_graph_batch1(model, args.device, args.seconds), 2)
        # top-down cost model: E+H once per image vs a single-person pass per person (crop at 224)
        single = entry["fp32_img_per_s"][best]
        entry["top_down_img_per_s_by_people"] = {p: round(single / (1 + p), 2) for p in (1, 2, 4, 8)}
        entry["bottom_up_img_per_s_by_people"] = {p: single for p in (1, 2, 4, 8)}
        # the measured two-stage mode: E + H on the images, then E + H' on every person's crop
        results["sizes"][size] = entry
        if args.no_refine:
            continue
        refine_batch = args.refine_batch or best
        pairs = {p: paired_rates(model, refine_batch, p, args.device, args.rounds) for p in args.people}
        entry["refined_batch"] = refine_batch
        entry["paired_clock"] = "wall" if args.device.startswith("cuda") else "process CPU time, 1 thread"
        entry["paired_single_shot_img_per_s_by_people"] = {p: r[0] for p, r in pairs.items()}
        entry["refined_fp32_img_per_s_by_people"] = {p: r[1] for p, r in pairs.items()}
        results["sizes"][size] = entry
        print(size, json.dumps(entry))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
