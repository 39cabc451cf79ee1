"""What a frozen teacher's latent carries about 3D: H trained with full 3D supervision on E(I), held-out renders.

The student reads every image through the frozen teacher's E, so no loss (unsupervised or not) can get more 3D out of
an image than H can read from v = E(I). This probe measures that bound: it renders images of one style with their GT,
caches v = E(I) (or the teacher's maps F(E(I)), or maps rendered from the exact GT 2D), trains the tiny preset's H on
them with the D_syn ground-truth terms at the true roots (the same ``reconstruction_terms`` and M as the stages), and
reports root-relative / canonical MPJPE, orientation, spread and the median root-depth error at the GT roots of
held-out images at fixed steps.
It also scores the teacher on the held-out images (``teacher_2d``): its heatmaps in each sided joint's own and mirror
channel at the visible GT joints (equal for a teacher that cannot tell left from right), and its grouped people
(matched to GT by root pixel): how often each joint is found and how many people are closer to the left/right-swapped
GT than to the GT.
``--input gt_maps`` (the exact, left/right-labelled 2D as maps) and ``gt_maps_unlabelled`` (left and right merged,
as a teacher that cannot tell them apart) are the references a better teacher would move towards. JSON to
``benchmarks/results/``.

    python benchmarks/bench_teacher_probe.py --teacher runs/teacher/checkpoints/last.ckpt \
        --aae runs/aae/checkpoints/last.ckpt --name tiny_teacher
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lightning_mp3d.detection import match_roots
from lightning_mp3d.geometry import pixel_to_grid
from lightning_mp3d.losses.cross_modal import reconstruction_terms
from lightning_mp3d.metrics.diagnostics import pose_diagnostics
from lightning_mp3d.models.aae import load_pose_decoder
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import SceneHead
from lightning_mp3d.models.teacher import Teacher, load_teacher
from lightning_mp3d.skeleton import FLIP_PERM, JOINTS, LIMB_FLIP_PERM, NUM_JOINTS
from lightning_mp3d.synth.batches import GT_KEYS, synthetic_batches
from lightning_mp3d.synth.maps import render_maps

RESULTS = Path(__file__).resolve().parent / "results"
INPUTS = ("v", "teacher_maps", "gt_maps", "gt_maps_unlabelled")
# the tiny preset's recon_terms without reproj (the probe asks what H reads of the 3D, not of the 2D it is given)
TINY_TERMS = {"recon_rel": 1.0, "log_depth": 100.0, "canonical": 1.0, "rotation": 100.0}


def unlabelled(maps: torch.Tensor) -> torch.Tensor:
    """Maps with left and right merged: each side's heatmap is the max of both, each limb's PAF the sum of both."""
    heat = torch.maximum(maps[:, :NUM_JOINTS], maps[:, list(FLIP_PERM)])
    paf = maps[:, NUM_JOINTS:].unflatten(1, (-1, 2))
    return torch.cat((heat, (paf + paf[:, list(LIMB_FLIP_PERM)]).flatten(1, 2)), 1)


@torch.no_grad()
def inputs_of(teacher: Teacher, batch: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """H's input for a rendered batch: v, the teacher's maps, or maps of the exact GT 2D."""
    if kind.startswith("gt_maps"):
        maps = render_maps(batch["joints_2d"], batch["mask"], visibility=batch["visibility"])
        return unlabelled(maps) if kind == "gt_maps_unlabelled" else maps
    v = teacher.encode(batch["image"])
    return torch.cat(teacher.decode(v), 1) if kind == "teacher_maps" else v


@torch.no_grad()
def teacher_2d(teacher: Teacher, style: str, num_images: int, seed: int) -> dict:
    """The teacher against the GT 2D: its maps' left/right gap at the joints, and its grouped people.

    ``heatmap_own_vs_mirror``: at every visible GT joint of a sided (left/right) joint, the mean heatmap value in the
    joint's own channel and in its mirror channel, and their mean absolute difference; a teacher that cannot tell
    the sides apart has own == mirror. The grouped people (matched to GT by root pixel) give the fraction of each
    joint found and of people closer to the left/right-swapped GT than to the GT.
    """
    mirror = torch.tensor(FLIP_PERM)
    sided = mirror != torch.arange(NUM_JOINTS)
    found, swapped, people = torch.zeros(NUM_JOINTS), 0, 0
    own, other, gap, seen_joints = (torch.zeros(NUM_JOINTS) for _ in range(4))
    for batch in synthetic_batches(num_images, style, seed, 32):
        v = teacher.encode(batch["image"])
        heat = teacher.decode(v)[0]  # (B, 15, G, G)
        cells = pixel_to_grid(batch["joints_2d"], heat.shape[-1], batch["image"].shape[-1])  # (B, P, 15, 2)
        b, p, j = (batch["visibility"] & batch["mask"][..., None]).nonzero(as_tuple=True)
        col, row = cells[b, p, j].unbind(-1)
        at_own, at_mirror = heat[b, j, row, col], heat[b, mirror[j], row, col]
        own.index_add_(0, j, at_own)
        other.index_add_(0, j, at_mirror)
        gap.index_add_(0, j, (at_own - at_mirror).abs())
        seen_joints.index_add_(0, j, torch.ones_like(at_own))

        out = teacher.group(v)
        index = match_roots(out.roots_px, out.mask, batch["roots_px"], batch["mask"])  # (B, G) -> prediction
        matched = index >= 0
        rows = torch.arange(index.shape[0])[:, None].expand_as(index)[matched]
        pred, conf = out.keypoints[rows, index[matched]], out.confidence[rows, index[matched]]  # (N, 15, 2), (N, 15)
        gt, seen = batch["joints_2d"][matched], conf > 0
        err = ((pred - gt).norm(dim=-1) * seen).sum(-1)
        err_swapped = ((pred - gt[:, mirror]).norm(dim=-1) * seen).sum(-1)
        found += seen.sum(0)
        swapped += int((err_swapped < err).sum())
        people += int(matched.sum())
    n = seen_joints.clamp(min=1)
    return {
        "matched_people": people,
        "left_right_swapped": swapped / max(people, 1),
        "joints_found": dict(zip(JOINTS, (found / max(people, 1)).tolist(), strict=True)),
        "heatmap_own_vs_mirror": {
            JOINTS[k]: {"own": float(own[k] / n[k]), "mirror": float(other[k] / n[k]), "abs_gap": float(gap[k] / n[k])}
            for k in sided.nonzero().flatten().tolist()
        },
    }


def rendered_set(teacher: Teacher, kind: str, style: str, num_images: int, seed: int) -> dict[str, torch.Tensor]:
    """H's inputs (float16 to save memory) and the GT of ``num_images`` renders."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in (*GT_KEYS, "x")}
    for batch in synthetic_batches(num_images, style, seed, 32):
        parts["x"].append(inputs_of(teacher, batch, kind).half())
        for key in GT_KEYS:
            parts[key].append(batch[key])
    return {k: torch.cat(v) for k, v in parts.items()}


def write_result(name: str, out: dict) -> Path:
    """``out`` as ``benchmarks/results/<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return path


@torch.no_grad()
def evaluate(h: SceneHead, decoder: SceneDecoder, test: dict[str, torch.Tensor]) -> dict[str, float]:
    h.eval()
    preds, gts, depth_errors = [], [], []
    for i in range(0, test["x"].shape[0], 64):
        b = {k: v[i : i + 64] for k, v in test.items()}
        scene = decoder(h(b["x"].float()), b["root_cells"], b["mask"], b["roots_px"])
        preds.append(scene.poses[b["mask"]]), gts.append(b["poses"][b["mask"]])
        depth_errors.append((scene.depth - b["depth"])[b["mask"]].abs())
    h.train()
    pred, gt = torch.cat(preds), torch.cat(gts)
    d = pose_diagnostics(pred[None], gt[None], torch.ones(1, pred.shape[0], dtype=torch.bool))
    return {
        **d._asdict(),
        "spread_ratio": d.spread_ratio,
        "root_depth_error_median": float(torch.cat(depth_errors).median()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="stage-0 checkpoint (or OpenPose .pth)")
    parser.add_argument("--aae", required=True, help="AAE stage checkpoint (frozen Psi)")
    parser.add_argument("--input", choices=INPUTS, default="v")
    parser.add_argument("--style", default="target", help="image style of the training and held-out renders")
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--test-images", type=int, default=256)
    parser.add_argument("--steps", default="250,500,1000", help="report after these training steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=32, help="H's width (the tiny preset's 32)")
    parser.add_argument("--window", type=int, default=15, help="H's person window (the tiny preset's 15)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="probe")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    teacher = load_teacher(args.teacher)
    decoder = SceneDecoder(load_pose_decoder(args.aae))
    start = time.perf_counter()
    train = rendered_set(teacher, args.input, args.style, args.train_images, seed=1234)
    test = rendered_set(teacher, args.input, args.style, args.test_images, seed=999)
    setup_s = time.perf_counter() - start
    found = teacher_2d(teacher, args.style, args.test_images, seed=999) if args.input in ("v", "teacher_maps") else None
    if found is not None:
        print(json.dumps({k: v for k, v in found.items() if k != "joints_found"}), flush=True)
    h = SceneHead(train["x"].shape[1], width=args.width, fc_channels=args.width, window=args.window)
    optimizer = torch.optim.Adam(h.parameters(), lr=args.lr)
    report_at = sorted(int(s) for s in args.steps.split(","))
    generator = torch.Generator().manual_seed(args.seed)
    curve = []
    start = time.perf_counter()
    for step in range(1, report_at[-1] + 1):
        index = torch.randint(0, train["x"].shape[0], (args.batch_size,), generator=generator)
        b = {k: v[index] for k, v in train.items()}
        scene = decoder(h(b["x"].float()), b["root_cells"], b["mask"], b["roots_px"])
        loss = sum(reconstruction_terms(scene, b, TINY_TERMS).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in report_at:
            curve.append({"step": step, "seconds": time.perf_counter() - start, **evaluate(h, decoder, test)})
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in curve[-1].items()}), flush=True)
    out = {"args": vars(args), "setup_seconds": setup_s, "threads": torch.get_num_threads(), "curve": curve}
    out["teacher_2d"] = found
    write_result(f"teacher_probe_{args.name}", out)
    return out


if __name__ == "__main__":
    main()
