"""Pictures of predictions: 2D skeletons over the image and camera-centric 3D skeletons (matplotlib, no Lightning)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lightning_mp3d.skeleton import LIMBS  # noqa: E402

PERSON_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:olive", "tab:pink")


def draw_skeleton_2d(ax, keypoints: np.ndarray, colour: str, lw: float = 1.5, ls: str = "-") -> None:
    """keypoints (15, 2) pixels."""
    for a, b in LIMBS:
        ax.plot(keypoints[[a, b], 0], keypoints[[a, b], 1], color=colour, lw=lw, ls=ls)
    ax.scatter(keypoints[:, 0], keypoints[:, 1], s=4, color=colour)


def draw_skeleton_3d(ax, pose: np.ndarray, colour: str) -> None:
    """pose (15, 3) camera mm, drawn with x right, z away from the camera, -y up."""
    for a, b in LIMBS:
        ax.plot(pose[[a, b], 0], pose[[a, b], 2], -pose[[a, b], 1], color=colour, lw=1.5)


def prediction_figure(
    images: torch.Tensor,
    prediction,
    gt_2d: torch.Tensor | None = None,
    gt_mask: torch.Tensor | None = None,
) -> plt.Figure:
    """One column per image: the image with predicted (solid) and GT (dashed white) 2D skeletons, and the 3D scene.

    Args:
        images: (B, 3, H, W) in [0, 1].
        prediction: anything with ``poses (B, K, 15, 3)``, ``keypoints (B, K, 15, 2)``, ``mask (B, K)``.
        gt_2d: optional (B, G, 15, 2) pixels; gt_mask (B, G).
    """
    n = images.shape[0]
    fig = plt.figure(figsize=(3.2 * n, 6.4))
    for i in range(n):
        ax = fig.add_subplot(2, n, i + 1)
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        if gt_2d is not None:
            for g in torch.nonzero(gt_mask[i]).flatten().tolist():
                draw_skeleton_2d(ax, gt_2d[i, g].cpu().numpy(), "white", lw=1.0, ls="--")
        people = torch.nonzero(prediction.mask[i]).flatten().tolist()
        for k, p in enumerate(people):
            draw_skeleton_2d(ax, prediction.keypoints[i, p].detach().cpu().numpy(), PERSON_COLOURS[k % 8])
        ax.set_xlim(0, images.shape[-1])
        ax.set_ylim(images.shape[-2], 0)
        ax.set_axis_off()
        ax.set_title(f"{len(people)} people", fontsize=8)
        ax3 = fig.add_subplot(2, n, n + i + 1, projection="3d")
        for k, p in enumerate(people):
            draw_skeleton_3d(ax3, prediction.poses[i, p].detach().cpu().numpy(), PERSON_COLOURS[k % 8])
        ax3.set_xlabel("x mm", fontsize=6)
        ax3.set_ylabel("z mm", fontsize=6)
        ax3.set_zlabel("-y mm", fontsize=6)
        ax3.tick_params(labelsize=5)
    fig.tight_layout()
    return fig
