"""MuCo-3DHP loader (issue 13, item 8) on a fixture in the real layout: MuCo-3DHP.json (COCO style, 21 joints,
per-image f and c) beside the composited frames; GT as the model sees it, and shards the D_I datamodule reads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mp3d.datamodules.images import ImageDataModule
from lightning_mp3d.datamodules.muco import MuCoDataset, write_muco_shards
from lightning_mp3d.geometry import Intrinsics, project
from lightning_mp3d.skeleton import MUPOTS17_TO_OURS
from lightning_mp3d.synth.batches import synthetic_batch

FRAMES = (  # (file_name, W, H, fx, fy, cx, cy, people)
    ("augmented_set/000001/img_000000.jpg", 2048, 2048, 1500.0, 1520.0, 1010.0, 1040.0, 3),
    ("augmented_set/000001/img_000001.jpg", 2048, 2048, 1480.0, 1470.0, 1030.0, 1000.0, 2),
)


@pytest.fixture(scope="module")
def muco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("MuCo")
    rng = np.random.default_rng(0)
    images, annotations, truth = [], [], {}
    for i, (name, w, h, fx, fy, cx, cy, people) in enumerate(FRAMES):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (40 * i, 90, 120)).save(root / name)
        images.append({"id": i, "file_name": name, "width": w, "height": h, "f": [fx, fy], "c": [cx, cy]})
        for k in range(people):
            cam = rng.normal(0.0, 200.0, (21, 3)) + np.array([-900.0 + 900.0 * k, 100.0, 4000.0 + 500.0 * k])
            img = np.stack((fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy), 1)
            vis = rng.random(21) > 0.2
            annotations.append(
                {"id": len(annotations), "image_id": i, "keypoints_img": img.tolist(), "keypoints_cam": cam.tolist(),
                 "keypoints_vis": vis.tolist(), "bbox": [0, 0, 10, 10]}
            )  # fmt: skip
            truth[(i, k)] = (img, cam, vis)
    (root / "MuCo-3DHP.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return root, truth


def test_muco_items_carry_the_gt_as_the_model_sees_it(muco_root):
    root, truth = muco_root
    ds = MuCoDataset(root)
    assert len(ds) == 2 and ds.max_people == 3
    item = ds[0]
    assert item["image"].shape == (3, 224, 224) and item["mask"].tolist() == [True, True, True]
    ours = list(MUPOTS17_TO_OURS)
    img, cam, vis = truth[(0, 1)]
    s = 224 / 2048
    torch.testing.assert_close(item["joints_2d"][1], torch.tensor(img[ours] * s, dtype=torch.float32))
    assert item["visibility"][1].tolist() == vis[ours].tolist()
    # the 3D GT lives in the 224 px input camera: its root projects onto the 2D root, the relative pose is kept
    virtual = Intrinsics.for_image(224)
    torch.testing.assert_close(project(item["poses"][1, 0], virtual), item["roots_px"][1], atol=1e-3, rtol=0)
    rel = torch.tensor(cam[ours] - cam[ours][0], dtype=torch.float32)
    torch.testing.assert_close(item["poses"][1] - item["poses"][1, :1], rel, atol=1e-2, rtol=0)
    assert item["depth"][1] == pytest.approx(cam[14, 2] * 224 / (s * np.sqrt(1500.0 * 1520.0)), rel=1e-5)
    assert (item["root_cells"][1] == (item["roots_px"][1] / 16).long()).all()
    padded = ds[1]
    assert padded["mask"].tolist() == [True, True, False] and padded["poses"][2].eq(0).all()


def test_muco_shards_feed_the_image_datamodule_with_the_supervision_keys(muco_root, tmp_path):
    root, _ = muco_root
    shards = write_muco_shards(root, tmp_path / "shards", images_per_shard=1, progress=False)
    assert [p.name for p in shards] == ["muco-000000.tar", "muco-000001.tar"]
    dm = ImageDataModule(train=str(tmp_path / "shards" / "muco-*.tar"), batch_size=2, val_size=0)
    batch = next(iter(dm.train_dataloader()))
    item = MuCoDataset(root)[0]
    rendered = synthetic_batch(1, "target", torch.Generator().manual_seed(0))
    for key in ("poses", "joints_2d", "visibility", "roots_px", "root_cells", "mask"):  # what L_2D / L_3D read
        assert batch[key].dtype == rendered[key].dtype and batch[key].shape[2:] == rendered[key].shape[2:], key
        torch.testing.assert_close(batch[key][0], item[key], msg=key)
    assert batch["image"].shape == (2, 3, 224, 224)
    assert (batch["image"][0] - item["image"]).abs().mean() < 0.02  # JPEG


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="MuCo-3DHP.json"):
        MuCoDataset(tmp_path)


def test_weak_and_full_supervision_train_on_muco_shards(muco_root, tmp_path):
    from tests.helpers import make_frozen_checkpoints, run_stage

    root, _ = muco_root
    write_muco_shards(root, tmp_path / "shards", images_per_shard=1, progress=False)
    teacher, aae = make_frozen_checkpoints(tmp_path / "frozen")
    cli = run_stage(
        "distill", tmp_path, teacher, aae,
        f"--config={Path(__file__).resolve().parents[1] / 'configs' / 'real' / 'stage_distill.yaml'}",
        f"--model.init_args.teacher_checkpoint={teacher}",
        f"--data.init_args.train={tmp_path / 'shards' / 'muco-*.tar'}",
        "--model.init_args.use_weak_2d=true", "--model.init_args.use_full_3d=true", "--trainer.max_epochs=1",
    )  # fmt: skip
    logged = cli.trainer.callback_metrics
    assert cli.trainer.global_step >= 1
    assert torch.isfinite(logged["train/loss_sup_2d"]) and logged["train/loss_sup_2d"] > 0
    assert torch.isfinite(logged["train/loss_sup_3d"]) and logged["train/loss_sup_3d"] > 0
