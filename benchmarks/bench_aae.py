"""Training throughput of the aae stage (poses/s) on the current machine; writes benchmarks/results/aae_<device>.json.

    python benchmarks/bench_aae.py [--preset default|tiny] [--batches 300] [--threads 1] [--device cpu|cuda]
    python benchmarks/bench_aae.py --compare [--preset tiny] [bench_lightning options, e.g. --rounds 4]

Times full training steps (Φ+Ψ update, Disc update, artificial-pose sampling included) after a warm-up, with the
networks of the default config or of the tiny preset. ``--compare``: ``lightning fit`` of the aae stage against a plain
loop on the same batches, alternating (benchmarks/bench_lightning.py --stages aae; writes bench_lightning_<size>.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from lightning_mp3d.geometry.pose import forward_kinematics, to_local
from lightning_mp3d.losses.aae import cycle_loss, discriminator_loss, generator_loss
from lightning_mp3d.models.aae import PoseDecoder, PoseDiscriminator, PoseEncoder
from lightning_mp3d.synth.poses import sample_artificial_poses

PRESETS = {"default": dict(width=256, depth=3, lr=1e-3), "tiny": dict(width=128, depth=2, lr=1e-3)}


def main() -> None:
    if "--compare" in sys.argv:
        compare("aae")
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg, dev, n = PRESETS[args.preset], torch.device(args.device), args.batch_size
    enc = PoseEncoder(32, cfg["width"], cfg["depth"]).to(dev)
    dec = PoseDecoder(32, cfg["width"], cfg["depth"], range_scale=1.0).to(dev)  # bounded, as the configs
    disc = PoseDiscriminator(cfg["width"], cfg["depth"]).to(dev)
    opts = [torch.optim.Adam(m.parameters(), lr=cfg["lr"]) for m in (enc, dec, disc)]
    generator = torch.Generator(dev).manual_seed(0)

    def step() -> None:
        p_c = sample_artificial_poses(n, generator, dtype=torch.float32, device=dev)
        p_l, phi = to_local(p_c), torch.rand(n, 32, device=dev) * 2 - 1
        disc.requires_grad_(False)
        p_l_prior = dec(phi)
        cyc = cycle_loss(p_c, forward_kinematics(dec(enc(p_l))), phi, enc(p_l_prior))
        (cyc.total + 0.1 * generator_loss(disc(p_l_prior))).backward()
        disc.requires_grad_(True)
        for opt in opts[:2]:
            opt.step()
            opt.zero_grad(set_to_none=True)
        discriminator_loss(disc(p_l), disc(p_l_prior.detach())).backward()
        opts[2].step()
        opts[2].zero_grad(set_to_none=True)

    for _ in range(20):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.batches):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "benchmark": "aae_train_step",
        "preset": args.preset,
        "batch_size": n,
        "batches": args.batches,
        "threads": args.threads,
        "device": args.device if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "seconds": round(seconds, 3),
        "batches_per_s": round(args.batches / seconds, 2),
        "poses_per_s": round(args.batches * n / seconds, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    out = Path(__file__).parent / "results" / f"aae_{args.preset}_{dev.type}_b{n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def compare(stage: str) -> None:
    """``--compare``: bench_lightning.py for ``stage``; ``--preset`` picks the size, other options pass through."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_lightning import main as bench_lightning

    args = [a for a in sys.argv[1:] if a != "--compare"]
    if "--preset" in args:
        i = args.index("--preset")
        args[i : i + 2] = ["--sizes", "tiny" if args[i + 1] == "tiny" else "default"]
    bench_lightning(["--stages", stage, *args])


if __name__ == "__main__":
    main()
