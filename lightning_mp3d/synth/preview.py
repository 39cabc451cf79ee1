"""Pictures and summaries of D_syn: ``python -m lightning_mp3d.synth.preview --out dsyn_preview.png --scenes 4``.

Each row of the PNG is one scene: the camera-centric 3D skeletons (x right, z forward, -y up), the projected 2D
skeletons in the 224 image, the sum of the 15 heatmaps and the PAF magnitude on the 28 x 28 grid.
``--shards DIR`` prints ``summarise(DIR)`` instead of (or besides) the picture.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from lightning_mp3d.atomic import save_figure_atomic
from lightning_mp3d.synth.maps import render_maps
from lightning_mp3d.synth.scenes import compose_scenes
from lightning_mp3d.visualize import plt, scenes_figure


def summarise(shards, *, max_people: int = 4) -> str:
    """Print and return a short summary of D_syn shards: scene count, people-count histogram, depth range.

    Args:
        shards: folder, glob, brace pattern or list of shard paths (``datamodules.dsyn.write_dsyn_shards``).
        max_people: most people of a scene (the histogram's last bin).
    """
    from lightning_mp3d.datamodules.shards import tensor_shard_pipeline

    counts = torch.zeros(max_people + 1, dtype=torch.long)
    depths = []
    for sample in tensor_shard_pipeline(shards):
        mask = sample["mask"].bool()
        counts[int(mask.sum())] += 1
        depths.append(sample["depth"][mask])
    depth = torch.cat(depths) if depths else torch.zeros(0)
    hist = ", ".join(f"{n} people: {int(c)}" for n, c in enumerate(counts.tolist()) if n > 0)
    text = (
        f"{int(counts.sum())} scenes; {hist}; root depth {depth.min():.0f}..{depth.max():.0f} mm "
        f"(mean {depth.mean():.0f})"
        if depth.numel()
        else "no scenes"
    )
    print(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: write a preview PNG of a few generated scenes and/or summarise shards."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dsyn_preview.png", help="PNG to write ('' for none)")
    parser.add_argument("--scenes", type=int, default=4, help="number of scenes to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pose-range-scale", type=float, default=1.0)
    parser.add_argument("--shards", default=None, help="D_syn shards to summarise")
    args = parser.parse_args(argv)
    if args.out:
        if args.scenes < 1:
            raise ValueError(f"--scenes must be >= 1, got {args.scenes}")
        scenes = compose_scenes(
            args.scenes, generator=torch.Generator().manual_seed(args.seed), pose_range_scale=args.pose_range_scale
        )
        maps = render_maps(scenes.joints_2d, scenes.mask)
        fig = scenes_figure(scenes, maps)
        save_figure_atomic(fig, args.out, dpi=80)
        plt.close(fig)
        print(f"wrote {args.out}")
    if args.shards:
        summarise(args.shards)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
