"""Learning curve of the D_syn auto-encoding pathway (G -> H -> M with the reconstruction terms) on held-out D_syn.

Trains G and H from scratch on on-the-fly D_syn batches with a frozen Psi from an AAE checkpoint, exactly the modules
and loss function the phase-1 stage uses, and reports at fixed iteration counts, on a fixed held-out D_syn set (people
at their true roots): root-relative MPJPE, canonical-pose MPJPE, orientation error, pose spread pred / GT, and the
mean-pose baselines. A regression in learnability shows as a worse curve; JSON to ``benchmarks/results/``.

    python benchmarks/bench_learning.py --aae runs/aae/checkpoints/last.ckpt --terms recon=1 --name paper
    python benchmarks/bench_learning.py --aae ... --terms recon_rel=1,log_depth=100,reproj=10 --readout 1,2,3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lightning_mp3d.datamodules.dsyn import make_dsyn_batch
from lightning_mp3d.losses.cross_modal import reconstruction_terms
from lightning_mp3d.metrics.diagnostics import pose_diagnostics
from lightning_mp3d.models.aae import load_pose_decoder
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import PoseMapEncoder, SceneHead

RESULTS = Path(__file__).resolve().parent / "results"


def parse_terms(text: str) -> dict[str, float]:
    """'recon=1,reproj=10' -> {'recon': 1.0, 'reproj': 10.0}."""
    return {k: float(v) for k, v in (item.split("=") for item in text.split(",") if item)}


@torch.no_grad()
def evaluate(g: torch.nn.Module, h: torch.nn.Module, decoder: SceneDecoder, batches: list[dict]) -> dict[str, float]:
    g.eval(), h.eval()
    preds, gts, masks, phis = [], [], [], []
    for b in batches:
        scene = decoder(h(g(b["maps"])), b["root_cells"], b["mask"], b["roots_px"])
        preds.append(scene.poses.flatten(0, 1)), gts.append(b["poses"].flatten(0, 1)), masks.append(b["mask"].flatten())
        phis.append(scene.phi[b["mask"]])
    g.train(), h.train()
    d = pose_diagnostics(torch.cat(preds), torch.cat(gts), torch.cat(masks))
    phi = torch.cat(phis)
    return {
        **d._asdict(),
        "spread_ratio": d.spread_ratio,
        "phi_abs_mean": float(phi.abs().mean()),  # how far phi moves from 0
        "phi_saturated": float((phi.abs() > 0.95).float().mean()),  # tanh saturation
        "phi_std_across_people": float(phi.std(0).mean()),  # 0 = one pose for everybody
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aae", required=True, help="AAE stage checkpoint (frozen Psi)")
    parser.add_argument("--terms", default="recon=1", help="reconstruction terms and weights, e.g. recon=1,reproj=10")
    parser.add_argument("--readout", default="", help="H's readout dilations, e.g. 1,2,3 (empty: none)")
    parser.add_argument("--window", type=int, default=0, help="H's person-window size on the 28x28 latent (0: off)")
    parser.add_argument("--window-channels", type=int, default=16)
    parser.add_argument("--no-g", action="store_true", help="H reads m_syn directly (diagnostic: is G the bottleneck?)")
    parser.add_argument("--g-hidden", type=int, default=None, help="G's hidden width (default: --width)")
    parser.add_argument("--g-skip", action="store_true", help="G's 1x1 skip from the maps to v~")
    parser.add_argument("--norm", action="store_true", help="GroupNorm in G and H")
    parser.add_argument("--g-lr-scale", type=float, default=1.0, help="G's learning rate relative to H's (0: frozen)")
    parser.add_argument("--width", type=int, default=32, help="H width (= G hidden, = H fc channels)")
    parser.add_argument("--v-channels", type=int, default=144, help="C_v (144 = the tiny embedded teacher)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--eval-at", default="0,100,200,400,700,1000")
    parser.add_argument("--val-batches", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="default")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/learning_<name>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    terms = parse_terms(args.terms)
    readout = tuple(int(d) for d in args.readout.split(",") if d)
    decoder = SceneDecoder(load_pose_decoder(args.aae))
    if args.no_g:
        args.v_channels = 43
    g = (
        torch.nn.Identity()
        if args.no_g
        else PoseMapEncoder(args.v_channels, hidden=args.g_hidden or args.width, skip=args.g_skip, norm=args.norm)
    )
    h = SceneHead(
        args.v_channels, width=args.width, fc_channels=args.width, readout_dilations=readout,
        window=args.window, window_channels=args.window_channels, norm=args.norm,
    )  # fmt: skip
    groups = [{"params": list(h.parameters())}]
    if args.g_lr_scale > 0 and not args.no_g:
        groups.append({"params": list(g.parameters()), "lr": args.lr * args.g_lr_scale})
    opt = torch.optim.Adam(groups, lr=args.lr)
    val_gen = torch.Generator().manual_seed(987654321)  # a seed no training stream uses
    val = [make_dsyn_batch(args.batch_size, val_gen) for _ in range(args.val_batches)]
    train_gen = torch.Generator().manual_seed(args.seed)
    eval_at = sorted({int(i) for i in args.eval_at.split(",")} | {args.iterations})
    curve, start = [], time.perf_counter()
    for it in range(args.iterations + 1):
        if it in eval_at:
            row = {"iteration": it, "seconds": round(time.perf_counter() - start, 1), **evaluate(g, h, decoder, val)}
            curve.append(row)
            print(
                f"[{args.name}] it {it:5d}  mpjpe_rel {row['mpjpe_rel']:.0f}  canonical {row['canonical_mpjpe']:.0f} "
                f"(mean {row['mean_canonical_mpjpe']:.0f})  orient {row['orientation_deg']:.0f}  "
                f"spread {row['spread_ratio']:.2f}  phi |{row['phi_abs_mean']:.2f}| "
                f"sd {row['phi_std_across_people']:.2f} "
                f"sat {row['phi_saturated']:.2f}  ({row['seconds']} s)",
                flush=True,
            )
        if it == args.iterations:
            break
        batch = make_dsyn_batch(args.batch_size, train_gen)
        scene = decoder(h(g(batch["maps"])), batch["root_cells"], batch["mask"], batch["roots_px"])
        loss = sum(reconstruction_terms(scene, batch, terms).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    result = {"name": args.name, "args": vars(args), "curve": curve}
    out = Path(args.out) if args.out else RESULTS / f"learning_{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
