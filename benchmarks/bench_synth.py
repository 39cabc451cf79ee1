"""Time artificial-pose sampling (1M poses), scene composition (10k scenes) and m_syn rendering (10k scenes) on CPU.

Run: ``python benchmarks/bench_synth.py``; prints the numbers and writes benchmarks/results/bench_synth.json.
"""

from __future__ import annotations

import json
import os
import platform
import time

import torch

from lightning_mp3d.synth import compose_scenes, render_maps, sample_artificial_poses


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> dict:
    g = torch.Generator().manual_seed(0)
    sample_artificial_poses(1000, g)  # warm-up
    _, t_poses = _timed(lambda: sample_artificial_poses(1_000_000, g))
    scenes, t_scenes = _timed(lambda: compose_scenes(10_000, generator=g))
    chunk = 500  # (chunk, P, J, 784) intermediates stay ~100 MB
    _, t_maps = _timed(
        lambda: [
            render_maps(scenes.joints_2d[i : i + chunk], scenes.mask[i : i + chunk]) for i in range(0, 10_000, chunk)
        ]
    )
    result = {
        "device": f"CPU ({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}",
        "torch": torch.__version__,
        "sample_1M_poses_s": round(t_poses, 3),
        "compose_10k_scenes_s": round(t_scenes, 3),
        "render_maps_10k_scenes_s": round(t_maps, 3),
    }
    print(json.dumps(result, indent=2))
    out = os.path.join(os.path.dirname(__file__), "results", "bench_synth.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
