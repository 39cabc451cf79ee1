"""Renderer throughput: images/s of ``synthetic_batch`` (scenes + rendering) per style and batch size.

Usage: ``python benchmarks/bench_render.py [--device cpu|cuda] [--batch-sizes 1 8 32] [--repeats 3]``; writes
``benchmarks/results/bench_render.json`` (or ``bench_render_<device>.json`` for a non-CPU device).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from lightning_mp3d.synth.batches import synthetic_batch


def bench(batch_size: int, style: str, device: str, repeats: int) -> float:
    """Best-of-``repeats`` images/s after one warm-up call."""
    gen = torch.Generator(device=device).manual_seed(0)
    synthetic_batch(batch_size, style, gen, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        synthetic_batch(batch_size, style, gen, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return batch_size / best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "images_per_s": {
            style: {str(b): round(bench(b, style, args.device, args.repeats), 1) for b in args.batch_sizes}
            for style in ("source", "target")
        },
    }
    name = "bench_render.json" if args.device == "cpu" else f"bench_render_{args.device.split(':')[0]}.json"
    out = Path(__file__).parent / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
