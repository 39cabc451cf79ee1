"""One trained student's H, three ways of reading an image: how much 3D each front end lets it recover.

A phase-1/phase-2 checkpoint holds G and H. On held-out rendered target images (with their GT), H is scored at the GT
roots (root-relative / canonical MPJPE, orientation, spread, median root-depth error) reading:

- ``exact_maps``: G(m) with m the maps of the exact GT 2D, what the D_syn pathway trains H on;
- ``teacher_maps``: G(F(E(I))), the frozen teacher's own heatmaps and PAFs of the image through G (``h_input: maps``);
- ``v``: E(I), the teacher's latent (the paper's student input).

The gap between ``exact_maps`` and ``teacher_maps`` is what the teacher's 2D costs; the gap between ``teacher_maps``
and ``v`` is what reading E(I) instead of the maps costs (the domain gap between G's latent and E's). This is the
measurement behind ``h_input: maps`` (README, "What the student learns"). JSON to ``benchmarks/results/``.

    python benchmarks/bench_front_end.py --checkpoint runs/phase1/checkpoints/last.ckpt --name tiny_phase1
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_teacher_probe import evaluate, write_result

from lightning_mp3d import checkpoints
from lightning_mp3d.models.aae import load_pose_decoder
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import PoseMapEncoder, SceneHead, TeacherMapsInput
from lightning_mp3d.models.teacher import load_teacher
from lightning_mp3d.synth.batches import GT_KEYS, synthetic_batches
from lightning_mp3d.synth.maps import render_maps

FRONT_ENDS = ("exact_maps", "teacher_maps", "v")


@torch.no_grad()
def front_end_inputs(path: str, style: str, num_images: int, seed: int) -> tuple[SceneHead, SceneDecoder, dict]:
    """The checkpoint's H and M, and H's input under each front end for ``num_images`` renders (plus their GT)."""
    ckpt = checkpoints.read(path, expect_stage=("phase1", "phase2"), what="student checkpoint")
    teacher = load_teacher(ckpt.upstream["teacher"]).freeze()
    decoder = SceneDecoder(load_pose_decoder(ckpt.upstream["aae"]), **ckpt.models["scene_decoder"])
    g, h = ckpt.build(PoseMapEncoder, "g").eval(), ckpt.build(SceneHead, "h").eval()
    maps_input = TeacherMapsInput(teacher, g)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in (*GT_KEYS, *FRONT_ENDS)}
    for batch in synthetic_batches(num_images, style, seed, 32):
        v = teacher.encode(batch["image"])
        parts["exact_maps"].append(g(render_maps(batch["joints_2d"], batch["mask"])))
        parts["teacher_maps"].append(maps_input(v))
        parts["v"].append(v)
        for key in GT_KEYS:
            parts[key].append(batch[key])
    return h, decoder, {k: torch.cat(v) for k, v in parts.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a phase1 or phase2 checkpoint (it holds G and H)")
    parser.add_argument("--style", default="target", help="image style of the held-out renders")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=999, help="render seed (the probe's held-out set)")
    parser.add_argument("--name", default="student")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    h, decoder, data = front_end_inputs(args.checkpoint, args.style, args.images, args.seed)
    gt = {k: data[k] for k in GT_KEYS}
    rows = {name: evaluate(h, decoder, gt | {"x": data[name]}) for name in FRONT_ENDS}
    for name, row in rows.items():
        print(name, json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    out = {"args": vars(args), "seconds": time.perf_counter() - start, "threads": torch.get_num_threads(), **rows}
    write_result(f"front_end_{args.name}", out)
    return out


if __name__ == "__main__":
    main()
