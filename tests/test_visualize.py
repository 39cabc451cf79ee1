"""One drawing function for every skeleton picture: ``visualize.draw_skeleton``'s frames and options, and each figure
built on it draws with it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_mp3d import visualize
from lightning_mp3d.skeleton import LIMBS
from lightning_mp3d.synth.batches import synthetic_batch
from lightning_mp3d.synth.maps import render_maps
from lightning_mp3d.synth.scenes import compose_scenes
from lightning_mp3d.visualize import draw_skeleton, plt


def _joints(dims: int) -> torch.Tensor:
    return torch.arange(15 * dims, dtype=torch.float32).view(15, dims)


def test_draw_skeleton_camera_frame_plots_x_z_minus_y():
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    joints = _joints(3)
    draw_skeleton(ax, joints, frame="camera")
    assert len(ax.lines) == len(LIMBS)
    xs, zs, ys = ax.lines[0].get_data_3d()
    a, b = LIMBS[0]
    np.testing.assert_array_equal(xs, joints[[a, b], 0].numpy())
    np.testing.assert_array_equal(zs, joints[[a, b], 2].numpy())
    np.testing.assert_array_equal(ys, -joints[[a, b], 1].numpy())
    plt.close(fig)


def test_draw_skeleton_draws_only_limbs_between_present_joints_and_marks_visibility():
    fig, ax = plt.subplots()
    present = torch.ones(15, dtype=torch.bool)
    present[LIMBS[0][1]] = False
    touching = sum(LIMBS[0][1] in limb for limb in LIMBS)
    visibility = torch.zeros(15, dtype=torch.bool)
    visibility[:5] = True
    draw_skeleton(ax, _joints(2), present=present, visibility=visibility)
    assert len(ax.lines) == len(LIMBS) - touching + 2  # limbs, then visible dots and occluded crosses
    assert len(ax.lines[-2].get_xdata()) == 5 and len(ax.lines[-1].get_xdata()) == 10
    plt.close(fig)


def test_draw_skeleton_names_a_bad_frame_or_shape():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="frame must be"):
        draw_skeleton(ax, _joints(2), frame="world")
    with pytest.raises(ValueError, match=r"joints must be \(15, 3\)"):
        draw_skeleton(ax, _joints(2), frame="canonical")
    plt.close(fig)


def _count_draws(monkeypatch) -> list[str]:
    calls = []
    original = visualize.draw_skeleton
    monkeypatch.setattr(visualize, "draw_skeleton", lambda ax, j, *a, **k: calls.append(k.get("frame", "image"))
                        or original(ax, j, *a, **k))  # fmt: skip
    return calls


def test_every_figure_draws_through_draw_skeleton(monkeypatch):
    calls = _count_draws(monkeypatch)
    batch = synthetic_batch(2, "target", torch.Generator().manual_seed(0), min_people=1, max_people=2)
    people = SimpleNamespace(poses=batch["poses"], keypoints=batch["joints_2d"], mask=batch["mask"])
    n = int(batch["mask"].sum())
    figures = [visualize.prediction_figure(batch["image"], people, batch["joints_2d"], batch["mask"])]
    assert calls.count("image") == 2 * n and calls.count("camera") == n
    calls.clear()
    figures += visualize.student_figures(
        batch["image"], people, people, batch["poses"], batch["joints_2d"], batch["mask"]
    )
    first = int(batch["mask"][0].sum())
    assert calls.count("camera") == 2 * first and calls.count("image") == 3 * first
    calls.clear()
    maps = torch.rand(2, 43, 28, 28)
    teacher = {"image": batch["image"], "gt": batch["joints_2d"], "gt_mask": batch["mask"], "mask": batch["mask"],
               "keypoints": batch["joints_2d"], "confidence": torch.ones(2, batch["mask"].shape[1], 15),
               "heatmaps": maps[:, :15], "pafs": maps[:, 15:]}  # fmt: skip
    figures.append(visualize.teacher_figure({"target": teacher}))
    assert calls.count("image") == 2 * n
    calls.clear()
    figures.append(visualize.pose_grid_figure(batch["canonical"][0, :1]))
    assert calls == ["canonical"]
    calls.clear()
    scenes = compose_scenes(2, generator=torch.Generator().manual_seed(1))
    figures.append(visualize.scenes_figure(scenes, render_maps(scenes.joints_2d, scenes.mask)))
    m = int(scenes.mask.sum())
    assert calls.count("camera") == m and calls.count("image") == m
    calls.clear()
    figures.append(visualize.gallery_figure({"target": batch}))
    assert calls.count("image") == n
    for fig in figures:
        plt.close(fig)
