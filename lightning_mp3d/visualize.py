"""Every skeleton picture of the package, drawn by one function (matplotlib, no Lightning).

``draw_skeleton`` draws one person in one of three frames: ``"image"`` (2D pixels, x right, y down), ``"camera"``
(camera-centric millimetres plotted as (x, z, -y), so up is up and depth goes away from the viewer) or
``"canonical"`` (canonical millimetres, X front, Y left, Z up, plotted as they are). The figures below are built on
it: predictions over images (predict, report), the student's validation pictures, the teacher's, the AAE's prior
poses, D_syn previews and the rendered-domain gallery. Figures are returned, never saved or logged here: the caller
saves (``atomic.save_figure_atomic``) or logs them (``systems/media.log_figure``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lightning_mp3d.skeleton import LIMBS, NUM_JOINTS  # noqa: E402

PERSON_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:olive", "tab:pink")
_RIGHT_JOINTS = frozenset((3, 5, 7, 9, 11, 13))  # r shoulder, elbow, wrist, hip, knee, ankle
RIGHT_LEFT_COLOURS = tuple("tab:red" if child in _RIGHT_JOINTS else "tab:blue" for _, child in LIMBS)
"""Per-limb colours: red for the right side, blue for the left and the spine."""
FRAMES = ("image", "camera", "canonical")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def draw_skeleton(
    ax,
    joints: torch.Tensor | np.ndarray,
    colour: Any = "tab:red",
    *,
    frame: str = "image",
    lw: float = 1.5,
    ls: str = "-",
    alpha: float | None = None,
    limb_colours: Sequence[Any] | None = None,
    present: torch.Tensor | np.ndarray | None = None,
    markers: bool = False,
    visibility: torch.Tensor | np.ndarray | None = None,
) -> None:
    """Draw one person's 14 limbs on ``ax`` (a 3D axis for the 3D frames).

    Args:
        ax: matplotlib axis.
        joints: (15, 2) pixels for ``frame="image"``; (15, 3) millimetres for ``"camera"`` / ``"canonical"``.
        colour: matplotlib colour of every limb (unless ``limb_colours``).
        frame: "image", "camera" or "canonical" (see the module docstring).
        lw: line width.
        ls: line style.
        alpha: opacity (None: matplotlib's default).
        limb_colours: 14 colours, one per limb of ``LIMBS`` (e.g. ``RIGHT_LEFT_COLOURS``).
        present: (15,) bool; a limb is drawn only when both its joints are present (default: all present).
        markers: also mark every joint with a small dot (2D).
        visibility: (15,) bool; mark visible joints with dots and occluded ones with black crosses (2D).
    """
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    dims = 2 if frame == "image" else 3
    k = _numpy(joints)
    if k.shape != (NUM_JOINTS, dims):
        raise ValueError(f"joints must be ({NUM_JOINTS}, {dims}) for frame {frame!r}, got {tuple(k.shape)}")
    if frame == "camera":
        k = np.stack((k[:, 0], k[:, 2], -k[:, 1]), -1)  # camera x right, y down, z forward -> (x, z, -y): up is up
    ok = np.ones(NUM_JOINTS, bool) if present is None else _numpy(present).astype(bool)
    for i, (a, b) in enumerate(LIMBS):
        if ok[a] and ok[b]:
            c = colour if limb_colours is None else limb_colours[i]
            ax.plot(*(k[[a, b], d] for d in range(dims)), color=c, lw=lw, ls=ls, alpha=alpha)
    if markers:
        ax.scatter(k[:, 0], k[:, 1], s=4, color=colour)
    if visibility is not None:
        vis = _numpy(visibility).astype(bool)
        ax.plot(k[vis, 0], k[vis, 1], "o", color=colour, ms=2.5)
        ax.plot(k[~vis, 0], k[~vis, 1], "x", color="k", ms=3.5)


def _label_camera_axes(ax, fontsize: float | None = None) -> None:
    """Label a camera-frame 3D axis and give its three axes one scale, so that people keep their proportions."""
    ax.set_aspect("equal")  # matplotlib's default box stretches each axis to its own data range
    ax.set_xlabel("x mm", fontsize=fontsize)
    ax.set_ylabel("z mm", fontsize=fontsize)
    ax.set_zlabel("-y mm", fontsize=fontsize)


def _image_axes(ax, image: torch.Tensor) -> None:
    """Show a (3, H, W) image in [0, 1] with pixel coordinates (row 0 at the top)."""
    h, w = image.shape[-2:]
    ax.imshow(image.permute(1, 2, 0).float().clamp(0, 1).cpu().numpy(), extent=(0, w, h, 0))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)


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
        gt_2d: optional (B, G, 15, 2) pixels.
        gt_mask: (B, G) bool, the real GT people of ``gt_2d``.
    """
    n = images.shape[0]
    fig = plt.figure(figsize=(3.2 * n, 6.4))
    for i in range(n):
        ax = fig.add_subplot(2, n, i + 1)
        _image_axes(ax, images[i])
        if gt_2d is not None:
            for g in torch.nonzero(gt_mask[i]).flatten().tolist():
                draw_skeleton(ax, gt_2d[i, g], "white", lw=1.0, ls="--", markers=True)
        people = torch.nonzero(prediction.mask[i]).flatten().tolist()
        for k, p in enumerate(people):
            draw_skeleton(ax, prediction.keypoints[i, p], PERSON_COLOURS[k % 8], markers=True)
        ax.set_axis_off()
        ax.set_title(f"{len(people)} people", fontsize=8)
        ax3 = fig.add_subplot(2, n, n + i + 1, projection="3d")
        for k, p in enumerate(people):
            draw_skeleton(ax3, prediction.poses[i, p], PERSON_COLOURS[k % 8], frame="camera")
        _label_camera_axes(ax3, fontsize=6)
        ax3.tick_params(labelsize=5)
    fig.tight_layout()
    return fig


def student_figures(
    images: torch.Tensor,
    prediction,
    teacher,
    gt_poses: torch.Tensor,
    gt_2d: torch.Tensor,
    gt_mask: torch.Tensor,
    index: int = 0,
) -> tuple[plt.Figure, plt.Figure]:
    """The student's validation pictures of image ``index``: 3D skeletons and a 2D overlay.

    The 3D figure shows the prediction vs the GT in the camera frame, the 2D one the student, the teacher and the GT.

    Args:
        images: (B, 3, H, W) in [0, 1].
        prediction: ``poses (B, K, 15, 3)``, ``keypoints (B, K, 15, 2)``, ``mask (B, K)`` (a ``Prediction``).
        teacher: ``keypoints (B, T, 15, 2)`` and ``mask (B, T)`` of the teacher's grouped people.
        gt_poses: (B, G, 15, 3) camera mm.
        gt_2d: (B, G, 15, 2) px.
        gt_mask: (B, G) bool.
        index: the image drawn.

    Returns:
        (3D figure, 2D figure).
    """
    i = index
    fig3d = plt.figure(figsize=(5, 5))
    ax = fig3d.add_subplot(projection="3d")
    for poses, mask, colour in ((prediction.poses, prediction.mask, "tab:red"), (gt_poses, gt_mask, "tab:green")):
        for p in torch.nonzero(mask[i]).flatten().tolist():
            draw_skeleton(ax, poses[i, p], colour, frame="camera")
    _label_camera_axes(ax)
    ax.set_title("3D: prediction (red) vs GT (green)")

    fig2d, ax = plt.subplots(figsize=(5, 5))
    _image_axes(ax, images[i])
    for joints, mask, colour in (
        (gt_2d, gt_mask, "tab:green"),
        (teacher.keypoints, teacher.mask, "tab:blue"),
        (prediction.keypoints, prediction.mask, "tab:red"),
    ):
        for p in torch.nonzero(mask[i]).flatten().tolist():
            draw_skeleton(ax, joints[i, p], colour)
    ax.set_title("2D: student (red), teacher (blue), GT (green)")
    return fig3d, fig2d


def teacher_figure(batches: dict[str, dict[str, torch.Tensor]]) -> plt.Figure:
    """Teacher validation figure: per set and image, the skeletons, the heatmaps' max and the PAF magnitude.

    Each row shows the image with GT (white) and grouped (colour) skeletons, the max over the predicted heatmaps and
    the predicted PAF magnitude.

    Args:
        batches: {set name: {``image (B, 3, H, W)``, ``gt (B, G, 15, 2)``, ``gt_mask (B, G)``, ``keypoints (B, K, 15,
            2)``, ``confidence (B, K, 15)``, ``mask (B, K)``, ``heatmaps (B, 15, g, g)``, ``pafs (B, 28, g, g)``}}.
    """
    rows = sum(b["image"].shape[0] for b in batches.values())
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    r = 0
    colours = plt.cm.tab10.colors
    for name, b in batches.items():
        for i in range(b["image"].shape[0]):
            ax = axes[r]
            _image_axes(ax[0], b["image"][i])
            for p in torch.nonzero(b["gt_mask"][i]).flatten().tolist():
                draw_skeleton(ax[0], b["gt"][i, p], "w", lw=2.5, alpha=0.6)
            for p in torch.nonzero(b["mask"][i]).flatten().tolist():
                draw_skeleton(ax[0], b["keypoints"][i, p], colours[p % 10], lw=1.2, present=b["confidence"][i, p] > 0)
            ax[0].set_title(f"{name} #{i}", fontsize=8)
            ax[1].imshow(b["heatmaps"][i].amax(0).clamp(0, 1).cpu().numpy(), vmin=0, vmax=1)
            ax[1].set_title("heatmaps (max)", fontsize=8)
            paf = b["pafs"][i].unflatten(0, (-1, 2)).norm(dim=1).amax(0)
            ax[2].imshow(paf.clamp(0, 1).cpu().numpy(), vmin=0, vmax=1)
            ax[2].set_title("PAF |v| (max)", fontsize=8)
            for a in ax:
                a.set_xticks([])
                a.set_yticks([])
            r += 1
    fig.tight_layout()
    return fig


def pose_grid_figure(p_c: torch.Tensor, columns: int = 4) -> plt.Figure:
    """A grid of 3D stick figures: p_c (N, 15, 3) canonical millimetres (X front, Y left, Z up), right side red."""
    n = p_c.shape[0]
    rows = (n + columns - 1) // columns
    fig = plt.figure(figsize=(2.2 * columns, 2.4 * rows))
    for i, pose in enumerate(p_c):
        ax = fig.add_subplot(rows, columns, i + 1, projection="3d")
        draw_skeleton(ax, pose, frame="canonical", limb_colours=RIGHT_LEFT_COLOURS)
        ax.set(xlim=(-900, 900), ylim=(-900, 900), zlim=(-900, 900), xticks=[], yticks=[], zticks=[])
        ax.view_init(elev=10, azim=30)
    fig.suptitle("Ψ(phi), phi ~ U[-1, 1]^32 (red: right side)")
    return fig


def scenes_figure(scenes, maps: torch.Tensor, image_size: int = 224) -> plt.Figure:
    """One row per D_syn scene: 3D skeletons (camera frame), 2D skeletons with roots, heatmap sum, PAF magnitude.

    Args:
        scenes: a ``synth.Scenes`` (``poses``, ``joints_2d``, ``roots_px``, ``mask``).
        maps: (B, 43, g, g) m_syn of the scenes.
        image_size: the image side the scenes were projected for, pixels.
    """
    b = scenes.poses.shape[0]
    fig = plt.figure(figsize=(14, 3.4 * b))
    colours = plt.cm.tab10.colors
    for i in range(b):
        ax = fig.add_subplot(b, 4, 4 * i + 1, projection="3d")
        ax2 = fig.add_subplot(b, 4, 4 * i + 2)
        for p in torch.nonzero(scenes.mask[i]).flatten().tolist():
            c = colours[p % 10]
            draw_skeleton(ax, scenes.poses[i, p], c, frame="camera", lw=2)
            draw_skeleton(ax2, scenes.joints_2d[i, p], c, lw=2)
            ax2.plot(*_numpy(scenes.roots_px[i, p]), "o", color=c)
        _label_camera_axes(ax)
        ax.set_ylabel("z (depth) mm")
        ax.set_title(f"scene {i}: {int(scenes.mask[i].sum())} people")
        ax2.set_xlim(0, image_size)
        ax2.set_ylim(image_size, 0)
        ax2.set_aspect("equal")
        ax2.set_title("2D projection")
        heat = maps[i, :NUM_JOINTS].sum(0)
        paf = maps[i, NUM_JOINTS:].unflatten(0, (-1, 2)).norm(dim=1).amax(0)
        for k, (img, title) in enumerate(((heat, "heatmap sum"), (paf, "PAF magnitude (max over limbs)"))):
            a = fig.add_subplot(b, 4, 4 * i + 3 + k)
            a.imshow(_numpy(img), cmap="magma")
            a.set_title(title)
    fig.tight_layout()
    return fig


def gallery_figure(batches: dict[str, dict[str, torch.Tensor]]) -> plt.Figure:
    """Row pairs per style: its renders plain, then with the GT skeletons (visible joints dots, occluded crosses).

    Args:
        batches: {style: a ``synth.batches.synthetic_batch`` of that style}; every batch of the same size.
    """
    per_style = next(iter(batches.values()))["image"].shape[0]
    fig, axes = plt.subplots(2 * len(batches), per_style, figsize=(2.0 * per_style, 4.1 * len(batches)), squeeze=False)
    for s, (style, batch) in enumerate(batches.items()):
        for i in range(per_style):
            for row, overlay in ((2 * s, False), (2 * s + 1, True)):
                ax = axes[row, i]
                _image_axes(ax, batch["image"][i])
                ax.set_axis_off()
                if i == 0:
                    ax.set_title(f"{style}{' + GT' if overlay else ''}", fontsize=8, loc="left")
                if not overlay:
                    continue
                for p in batch["mask"][i].nonzero().flatten().tolist():
                    colour = plt.cm.tab10(p % 10)
                    draw_skeleton(ax, batch["joints_2d"][i, p], colour, lw=1.2, visibility=batch["visibility"][i, p])
    fig.tight_layout()
    return fig
