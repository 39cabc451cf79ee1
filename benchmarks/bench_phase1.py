"""Phase-1 training throughput: iteration pairs (one D_syn + one D_I step with all three optimizers) per second.

Measures the model work only (data are pre-generated tensors, so the renderer's cost is excluded; see
bench_render.py for that), on CPU or a GPU, for a teacher width and batch sizes:

    python benchmarks/bench_phase1.py --width 0.125 --batch 8 16 --iters 5 --out results/bench_phase1.json
    python benchmarks/bench_phase1.py --compare [--sizes tiny default] [bench_lightning options, e.g. --rounds 4]

``--compare``: ``lightning fit`` of the phase-1 stage (its configs) against a plain loop on the same batches,
alternating (benchmarks/bench_lightning.py --stages phase1; writes bench_lightning_<size>.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from lightning_mp3d.datamodules.dsyn import make_dsyn_batch
from lightning_mp3d.geometry import pixel_to_grid
from lightning_mp3d.grouping import group_people
from lightning_mp3d.losses.cross_modal import adaptation_loss, distillation_loss, reconstruction_loss
from lightning_mp3d.models.aae import PoseDecoder
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import PoseMapEncoder, SceneHead
from lightning_mp3d.models.teacher import EmbeddedTeacher


def bench(width: float, batch: int, iters: int, g_hidden: int, h_width: int, h_fc: int, device: str) -> dict:
    torch.manual_seed(0)
    teacher = EmbeddedTeacher(width=width).freeze().to(device)
    decoder = SceneDecoder(PoseDecoder()).to(device)
    g = PoseMapEncoder(teacher.v_channels, g_hidden).to(device)
    h = SceneHead(teacher.v_channels, h_width, h_fc).to(device)
    opts = [torch.optim.Adam(list(g.parameters()) + list(h.parameters())), torch.optim.Adam(h.parameters())]
    opts.append(torch.optim.Adam(g.parameters()))
    syn = {k: v.to(device) for k, v in make_dsyn_batch(batch, torch.Generator().manual_seed(0)).items()}
    images = torch.rand(batch, 3, 224, 224, device=device)

    def step(opt, loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    def pair():
        s = h(g(syn["maps"]))
        scene = decoder(s, syn["root_cells"], syn["mask"], syn["roots_px"])
        step(opts[0], reconstruction_loss(scene.poses, syn["poses"], syn["mask"]))
        step(opts[2], adaptation_loss(*teacher.decode(g(syn["maps"])), syn["maps"]))
        with torch.no_grad():
            v = teacher.encode(images)
            people = group_people(*teacher.decode(v))
        cells = pixel_to_grid(people.roots_px, 14, 224)
        scene = decoder(h(v), cells, people.mask, people.roots_px)
        step(opts[1], distillation_loss(scene.keypoints, people.keypoints, people.confidence, people.mask))

    pair()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        pair()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iters
    return {
        "device": device,
        "teacher_width": width,
        "v_channels": teacher.v_channels,
        "batch": batch,
        "seconds_per_pair": seconds,
        "iterations_per_s": 2.0 / seconds,
        "samples_per_s": 2.0 * batch / seconds,
        "student_params": sum(p.numel() for p in list(g.parameters()) + list(h.parameters())),
    }


def main() -> None:
    if "--compare" in sys.argv:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_lightning import main as bench_lightning

        bench_lightning(["--stages", "phase1", *[a for a in sys.argv[1:] if a != "--compare"]])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--g-hidden", type=int, default=32)
    parser.add_argument("--h-width", type=int, default=32)
    parser.add_argument("--h-fc", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [bench(args.width, b, args.iters, args.g_hidden, args.h_width, args.h_fc, args.device) for b in args.batch]
    text = json.dumps(rows, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
