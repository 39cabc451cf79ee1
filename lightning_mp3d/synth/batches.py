"""Batch factories over the embedded renderer: rendered D_I batches with their ground truth.

``synthetic_batch`` draws one batch (scenes of a style, then their images) from a generator; ``synthetic_batches``
is the one fixed, seed-determined stream of such batches that validation sets, the report's test set and the image
shard writer read (one generator seeded once, chunks of ``batch_size``). The training streams are
``datamodules/streams.py``'s per-batch-seeded ones. Pure tensor code: no Lightning import.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from lightning_mp3d.synth.render import render_images
from lightning_mp3d.synth.scenes import compose_scenes
from lightning_mp3d.synth.styles import DomainStyle, get_style

__all__ = ["GT_KEYS", "TEST_SEED", "synthetic_batch", "synthetic_batches", "target_test_set"]

TEST_SEED = 20_200_823  # ECCV 2020's first day: the seed of the report's target test set
GT_KEYS = ("poses", "canonical", "rotation", "roots_px", "depth", "joints_2d", "root_cells", "mask", "visibility")
"""The ground-truth entries of a ``synthetic_batch`` (every key but ``image``)."""


def synthetic_batch(
    batch_size: int,
    style: str | DomainStyle = "target",
    generator: torch.Generator | None = None,
    *,
    image_size: int = 224,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **scene_overrides: Any,
) -> dict[str, torch.Tensor]:
    """A batch of rendered images of a style with its ground truth.

    The scenes come from ``compose_scenes(batch_size, **style.scene_kwargs, **scene_overrides)``.

    Returns:
        dict with ``image (B, 3, H, W)`` in [0, 1] and GT (evaluation and supervised baselines only):
        ``poses (B, P, 15, 3)`` camera mm, ``canonical (B, P, 15, 3)``, ``rotation (B, P, 6)``, ``roots_px (B, P, 2)``,
        ``depth (B, P)`` mm, ``joints_2d (B, P, 15, 2)`` px, ``root_cells (B, P, 2)`` long, ``mask (B, P)`` bool,
        ``visibility (B, P, 15)`` bool.
    """
    st = get_style(style)
    kwargs = {**st.scene_kwargs, **scene_overrides}
    scenes = compose_scenes(
        batch_size, generator=generator, image_size=image_size, dtype=dtype, device=device, **kwargs
    )
    rendered = render_images(scenes, st, generator=generator, image_size=image_size)
    out = {"image": rendered.images}
    for key in ("poses", "canonical", "rotation", "roots_px", "depth", "joints_2d", "root_cells", "mask"):
        out[key] = getattr(scenes, key)
    out["visibility"] = rendered.visibility
    return out


def synthetic_batches(
    num_images: int, style: str | DomainStyle, seed: int, batch_size: int = 16
) -> Iterator[dict[str, torch.Tensor]]:
    """A fixed stream of ``num_images`` rendered images in batches of ``batch_size`` (the last one shorter).

    One ``torch.Generator`` seeded with ``seed`` draws every batch in turn, so the images depend on ``seed`` and
    ``batch_size`` only; each batch is a ``synthetic_batch``.
    """
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, num_images, batch_size):
        yield synthetic_batch(min(batch_size, num_images - start), style, generator)


def target_test_set(
    num_images: int = 128, batch_size: int = 16, seed: int = TEST_SEED
) -> list[dict[str, torch.Tensor]]:
    """Fixed target-domain images with GT, as evaluation batches (``image``, ``gt_poses``, ``gt_2d``, ``gt_mask``)."""
    batches = []
    for b in synthetic_batches(num_images, "target", seed, batch_size):
        n = b["image"].shape[0]
        batches.append(
            {
                "image": b["image"],
                "gt_poses": b["poses"],
                "gt_2d": b["joints_2d"],
                "gt_mask": b["mask"],
                "gt_roots_px": b["roots_px"],
                "gt_depth": b["depth"],
                "sequence": torch.zeros(n, dtype=torch.long),
            }
        )
    return batches
