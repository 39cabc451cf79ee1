"""A PNG gallery of both synthetic image domains with the GT skeletons overlaid.

Usage: ``python -m lightning_mp3d.synth.gallery --out gallery.png [--per-style 6] [--seed 0]``. Row pairs show
each style's renders plain and with the skeletons (visible joints as dots, occluded joints as crosses).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lightning_mp3d.atomic import save_figure_atomic
from lightning_mp3d.synth.batches import synthetic_batch
from lightning_mp3d.synth.styles import DOMAIN_STYLES
from lightning_mp3d.visualize import gallery_figure, plt


def make_gallery(out: str | Path, per_style: int = 6, seed: int = 0, styles: tuple[str, ...] = ("source", "target")):
    """Render ``per_style`` images of each style and save the gallery PNG at ``out``; returns its path."""
    batches = {
        style: synthetic_batch(per_style, style, torch.Generator().manual_seed(seed + s))
        for s, style in enumerate(styles)
    }
    fig = gallery_figure(batches)
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
