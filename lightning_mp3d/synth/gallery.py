"""A PNG gallery of both synthetic image domains with the GT skeletons overlaid.

Usage: ``python -m lightning_mp3d.synth.gallery --out gallery.png [--per-style 6] [--seed 0]``. Row pairs show
each style's renders plain and with the skeletons (visible joints as dots, occluded joints as crosses).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lightning_mp3d.atomic import save_figure_atomic  # noqa: E402
from lightning_mp3d.skeleton import LIMBS  # noqa: E402
from lightning_mp3d.synth.batches import synthetic_batch  # noqa: E402
from lightning_mp3d.synth.styles import DOMAIN_STYLES  # noqa: E402


def make_gallery(out: str | Path, per_style: int = 6, seed: int = 0, styles: tuple[str, ...] = ("source", "target")):
    """Render ``per_style`` images of each style and save the gallery PNG at ``out``; returns its path."""
    fig, axes = plt.subplots(2 * len(styles), per_style, figsize=(2.0 * per_style, 4.1 * len(styles)), squeeze=False)
    for s, style in enumerate(styles):
        batch = synthetic_batch(per_style, style, torch.Generator().manual_seed(seed + s))
        for i in range(per_style):
            image = batch["image"][i].permute(1, 2, 0).numpy()
            for row, overlay in ((2 * s, False), (2 * s + 1, True)):
                ax = axes[row, i]
                ax.imshow(image)
                ax.set_axis_off()
                if i == 0:
                    ax.set_title(f"{style}{' + GT' if overlay else ''}", fontsize=8, loc="left")
                if not overlay:
                    continue
                people = batch["mask"][i].nonzero().flatten().tolist()
                for p in people:
                    k = batch["joints_2d"][i, p].numpy()
                    vis = batch["visibility"][i, p].numpy()
                    colour = plt.cm.tab10(p % 10)
                    for a, c in LIMBS:
                        ax.plot(k[[a, c], 0], k[[a, c], 1], "-", color=colour, lw=1.2)
                    ax.plot(k[vis, 0], k[vis, 1], "o", color=colour, ms=2.5)
                    ax.plot(k[~vis, 0], k[~vis, 1], "x", color="k", ms=3.5)
                ax.set_xlim(0, 224)
                ax.set_ylim(224, 0)
    fig.tight_layout()
    path = save_figure_atomic(fig, out, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> Path:
    """Command-line entry: ``--out``, ``--per-style``, ``--seed``, ``--styles``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gallery.png", help="output PNG path")
    parser.add_argument("--per-style", type=int, default=6, help="images per style")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--styles", nargs="+", default=list(DOMAIN_STYLES), choices=list(DOMAIN_STYLES))
    args = parser.parse_args(argv)
    path = make_gallery(args.out, args.per_style, args.seed, tuple(args.styles))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
