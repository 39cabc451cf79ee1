"""Throughput of the teacher: stage-0 training steps, inference F(E(I)) and PAF grouping.

    python benchmarks/bench_teacher.py --widths 0.0625 0.125 0.25 --batch 16 --device cpu
    python benchmarks/bench_teacher.py --widths 1.0 --batch 64 --device cuda

Prints one line per measurement (images per second, median of ``--repeats`` timed runs after a warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightning_mp3d.grouping import group_people
from lightning_mp3d.losses.teacher import teacher_loss
from lightning_mp3d.models.teacher import EmbeddedTeacher
from lightning_mp3d.synth.maps import render_maps


def _time(fn, device: str, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.0625, 0.125, 0.25])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    dev = args.device
    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, 224, 224, generator=g).to(dev)
    joints = (torch.rand(args.batch, args.people, 15, 2, generator=g) * 160 + 32).to(dev)
    mask = torch.ones(args.batch, args.people, dtype=torch.bool, device=dev)
    targets = render_maps(joints, mask)
    print(f"device={dev} torch={torch.__version__} threads={torch.get_num_threads()} batch={args.batch}")
    for width in args.widths:
        teacher = EmbeddedTeacher(width).to(dev)
        opt = torch.optim.Adam(teacher.parameters(), 1e-4)

        def train_step(teacher: EmbeddedTeacher = teacher, opt: torch.optim.Optimizer = opt) -> None:
            out = teacher.stages(images)
            loss = teacher_loss((out.heatmap1, out.heatmap2), (out.paf1, out.paf2), targets)
            loss.total.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def infer(teacher: EmbeddedTeacher = teacher) -> None:
            with torch.no_grad():
                teacher(images)

        n_params = sum(p.numel() for p in teacher.parameters())
        t_train = _time(train_step, dev, args.repeats)
        t_inf = _time(infer, dev, args.repeats)
        print(
            f"width={width:g} params={n_params / 1e6:.3f}M C_v={teacher.v_channels} "
            f"train={args.batch / t_train:.1f} img/s infer={args.batch / t_inf:.1f} img/s"
        )
    heat, pafs = targets[:, :15], targets[:, 15:]
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)  # tiny tensors: one CPU thread avoids intra-op overhead on a busy machine
        t_group = _time(lambda: group_people(heat, pafs), dev, args.repeats)
        print(f"group_people: {args.batch / t_group:.1f} img/s ({args.people} random people per image, {n} threads)")
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
