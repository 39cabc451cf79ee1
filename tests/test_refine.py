"""Two-stage refinement H' (paper Fig. 6): crop camera, H' = H on an identity crop, batching, export, the stage."""

import copy

import pytest
import torch

from lightning_mp3d.crops import (
    crop_images,
    person_crops,
    to_crop_camera,
    to_crop_pixels,
    to_image_camera,
    to_image_pixels,
)
from lightning_mp3d.geometry import Intrinsics, project
from lightning_mp3d.inference import PoseEstimator, Prediction, refine_people
from lightning_mp3d.models.aae import PoseDecoder
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import SceneHead
from lightning_mp3d.models.teacher import EmbeddedTeacher
from lightning_mp3d.predict import TupleOutput, export_torchscript
from lightning_mp3d.synth.batches import synthetic_batch
from lightning_mp3d.transforms import transform_points
from tests.helpers import make_frozen_checkpoints, run_stage


def random_estimator(**kwargs) -> PoseEstimator:
    """Tiny E, random H (output layer not zero) and Psi; H' = a copy of H unless given."""
    torch.manual_seed(0)
    teacher = EmbeddedTeacher(width=0.0625).freeze()
    head = SceneHead(teacher.v_channels, width=8, fc_channels=8)
    torch.nn.init.normal_(head.out.weight, std=0.3)
    kwargs.setdefault("refine_head", copy.deepcopy(head))
    return PoseEstimator(teacher, head, SceneDecoder(PoseDecoder(width=32, depth=2)), **kwargs)


def test_crop_virtual_camera_round_trip_to_1e4_mm(generator):
    b = synthetic_batch(3, "target", generator, dtype=torch.float64)
    crops = person_crops(b["roots_px"], b["depth"], b["mask"], crop_depth_mm=2500.0)
    people = b["mask"][crops.image]  # (N, P) every person of each crop's image
    poses = b["poses"][crops.image]  # (N, P, 15, 3)
    in_crop = to_crop_camera(poses, crops)
    torch.testing.assert_close(to_image_camera(in_crop, crops)[people], poses[people], atol=1e-4, rtol=0)
    camera = Intrinsics.for_image(224)
    # the crop camera sees each root where the crop's pixel mapping puts it, at depth / s
    roots_crop = to_crop_pixels(project(poses[..., 0, :], camera), crops)
    torch.testing.assert_close(project(in_crop[..., 0, :], camera)[people], roots_crop[people], atol=1e-6, rtol=0)
    depth = poses[..., 0, 2] * crops.side_px[:, None] / 224
    torch.testing.assert_close(in_crop[..., 0, 2][people], depth[people], atol=1e-6, rtol=0)
    own = roots_crop[torch.arange(len(crops.slot)), crops.slot]
    torch.testing.assert_close(own, torch.full_like(own, 112.0))  # each crop is centred on its person's root
    # one pixel mapping: the image warp's (transforms.transform_points) and its inverse
    joints = b["joints_2d"][crops.image]
    torch.testing.assert_close(transform_points(joints, crops.transform), to_crop_pixels(joints, crops))
    torch.testing.assert_close(to_image_pixels(to_crop_pixels(joints, crops), crops), joints)


def test_crop_images_shows_the_person_at_the_centre_at_the_crop_zoom():
    images = torch.zeros(2, 1, 224, 224)
    images[1, 0, 150:154, 60:64] = 1.0  # a 4-px dot centred at (62, 152)
    roots_px = torch.tensor([[[0.0, 0.0]], [[62.0, 152.0]]])
    crops = person_crops(roots_px, torch.tensor([[1.0], [6000.0]]), torch.tensor([[False], [True]]), 3000.0)
    assert crops.image.tolist() == [1] and crops.side_px.item() == pytest.approx(112.0)  # zoom 2
    crop = crop_images(images, crops)[0, 0]
    bright = torch.nonzero(crop > 0.5).float()
    torch.testing.assert_close(bright.mean(0), torch.tensor([111.5, 111.5]))  # centre of the 8-px dot (rows, cols)
    assert len(bright) == 64  # 4 px at zoom 2


def test_h_prime_with_h_weights_on_a_centred_one_person_crop_equals_single_shot():
    """A one-person image whose person the crop rule frames as the whole image: H' (= H) reproduces stage 1."""
    est = random_estimator(threshold=0.0)
    b = synthetic_batch(1, "target", torch.Generator().manual_seed(3), min_people=1, max_people=1)
    images = b["image"]
    s = est.head(est.encoder.encode(images))
    cells, mask = torch.tensor([[[7, 7]]]), torch.ones(1, 1, dtype=torch.bool)
    roots_px = torch.full((1, 1, 2), 112.0)  # centred: the crop's centre
    scene = est.scene_decoder(s, cells, mask, roots_px)
    stage1 = Prediction(scene.poses, scene.keypoints, torch.ones(1, 1), mask, roots_px)
    depth = float(scene.depth[0, 0])  # the rule's side is 224 px for a person at crop_depth_mm
    refined = refine_people(images, stage1, est.encoder, est.head, est.scene_decoder, 0.0, crop_depth_mm=depth)
    torch.testing.assert_close(refined.poses, stage1.poses, atol=1e-2, rtol=1e-4)  # mm
    torch.testing.assert_close(refined.keypoints, stage1.keypoints, atol=1e-3, rtol=0)
    # with an untrained H' (zero output layer: upright default person) the pose does change
    blank = SceneHead(est.encoder.v_channels, width=8, fc_channels=8)
    other = refine_people(images, stage1, est.encoder, blank, est.scene_decoder, 0.0, crop_depth_mm=depth)
    assert (other.poses - stage1.poses).abs().max() > 10.0


def test_refined_inference_is_batched_one_h_prime_call_per_batch():
    single = random_estimator(threshold=0.0, max_people=4)
    refined = random_estimator(threshold=0.0, max_people=4, refine=True)
    calls = []
    refined.refine_head.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    images = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out, base = refined(images), single(images)
    assert calls == [int(base.mask.sum())] and calls[0] > 3  # every person of the 3 images in one call
    for name in ("mask", "confidence", "roots_px"):  # stage 1 decides who is there and where
        torch.testing.assert_close(getattr(out, name), getattr(base, name))
    torch.testing.assert_close(out.keypoints[..., 0, :][out.mask], out.roots_px[out.mask], atol=1e-3, rtol=0)
    torch.testing.assert_close(out.keypoints, project(out.poses, Intrinsics.for_image(224)))
    with pytest.raises(ValueError, match="refine_head"):
        random_estimator(refine_head=None, refine=True)


@pytest.mark.parametrize("refine", [False, True])
def test_torchscript_export_of_both_modes_matches_eager(refine, tmp_path):
    est = random_estimator(threshold=0.0, max_people=3, refine=refine)
    export_torchscript(est, tmp_path / "model.pt")  # traced on 2 images (6 people)
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(7))  # 12 people
    for a, b in zip(TupleOutput(est)(images), loaded(images), strict=True):
        torch.testing.assert_close(b, a)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Tiny frozen checkpoints, then one step of distill, phase1, phase2 and refine."""
    root = tmp_path_factory.mktemp("refine_chain")
    teacher, aae = make_frozen_checkpoints(root / "frozen")
    run_stage("distill", root, teacher, aae, "--trainer.max_steps=1")
    run_stage("phase1", root, teacher, aae, "--trainer.max_steps=3", init_from=root / "distill/checkpoints/last.ckpt")
    run_stage("phase2", root, teacher, aae, "--trainer.max_steps=2", init_from=root / "phase1/checkpoints/last.ckpt")
    cli = run_stage(
        "refine", root, teacher, aae, "--trainer.max_steps=2", init_from=root / "phase2/checkpoints/last.ckpt"
    )
    assert cli.trainer.global_step == 2  # one step, both optimizers
    return root, teacher, aae


def test_refine_fast_dev_run_chained_from_phase2(chain, tmp_path):
    root, teacher, aae = chain
    phase2 = root / "phase2" / "checkpoints" / "last.ckpt"
    run_stage("refine", tmp_path, teacher, aae, "--trainer.fast_dev_run=true", init_from=phase2)


def test_refine_checkpoint_holds_frozen_stage1_and_trained_h_prime_and_runs_both_modes(chain):
    root, teacher, aae = chain
    phase2 = root / "phase2" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(root / "refine" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lightning_mp3d_stage"]["stage"] == "refine"
    p2 = torch.load(phase2, weights_only=True)["state_dict"]
    state = ckpt["state_dict"]
    h_keys = [k for k in p2 if k.startswith("h.")]
    for k in h_keys:  # stage 1 is phase 2's H, frozen; G too
        torch.testing.assert_close(state["detector." + k[2:]], p2[k])
    assert all(torch.equal(state[k], p2[k]) for k in p2 if k.startswith("g."))
    assert max((state[k] - p2[k]).abs().max().item() for k in h_keys) > 0  # H' trained
    for mode in (False, True):
        est = PoseEstimator.from_stage_checkpoint(root / "refine/checkpoints/last.ckpt", refine=mode, threshold=0.0)
        out = est(torch.rand(2, 3, 224, 224))
        assert out.mask.any() and torch.isfinite(out.poses).all()
    with pytest.raises(ValueError, match="no H'"):
        PoseEstimator.from_stage_checkpoint(phase2, refine=True)


def test_refine_refuses_to_start_from_another_stage(chain, tmp_path):
    root, teacher, aae = chain
    wrong = root / "phase1" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="'phase1' checkpoint, expected 'phase2'"):
        run_stage("refine", tmp_path, teacher, aae, "--trainer.fast_dev_run=true", init_from=wrong)


def test_crop_images_equals_the_image_warp_and_allows_no_people(generator):
    from lightning_mp3d.transforms import warp_images

    images = torch.rand(2, 3, 224, 224, generator=generator)
    crops = person_crops(torch.tensor([[[50.0, 70.0], [200.0, 10.0]]]).expand(2, 2, 2), torch.full((2, 2), 4000.0),
                         torch.tensor([[True, False], [True, True]]))  # fmt: skip
    expected = warp_images(images[crops.image], crops.transform)
    torch.testing.assert_close(crop_images(images, crops), expected, atol=1e-4, rtol=0)  # float rounding of the grid
    none = person_crops(torch.zeros(2, 2, 2), torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool))
    assert crop_images(images, none).shape == (0, 3, 224, 224)
    est = random_estimator(threshold=1.0, refine=True)  # nobody passes the threshold
    out = est(images)
    assert not out.mask.any()


def test_report_adds_the_refinement_row_and_both_modes_speed(chain, tmp_path):
    from lightning_mp3d.report import evaluate_chain

    root = chain[0]
    tables = evaluate_chain(root, tmp_path, preset="test", num_images=4, knn_bank=3000)
    assert {"phase2", "refine"} <= set(tables["grid scale"]) and "refine" in tables["learning"]
    speed = tables["speed_img_per_s"]
    assert speed["single_shot"] > 0 and speed["two_stage"] > 0
    md = (tmp_path / "results.md").read_text()
    assert "+ two-stage refinement H′" in md and "img/s" in md


def test_predict_refine_writes_refined_people_and_exports_the_refined_model(chain, tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from lightning_mp3d.predict import main as predict_main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(folder / name)
    ckpt = str(chain[0] / "refine" / "checkpoints" / "last.ckpt")
    common = ["--checkpoint", ckpt, "--input", str(folder), "--threshold", "0.0", "--batch-size", "2", "--no-png"]
    assert predict_main([*common, "--out", str(tmp_path / "single")]) == 0
    assert (
        predict_main([*common, "--out", str(tmp_path / "refined"), "--refine", "--export", str(tmp_path / "m.pt")]) == 0
    )
    single = json.loads((tmp_path / "single" / "a.json").read_text())["people"]
    refined = json.loads((tmp_path / "refined" / "a.json").read_text())["people"]
    assert len(single) == len(refined) > 0
    # the same people (stage 1's root pixels), re-estimated by H'
    roots = [torch.tensor([p["joints_2d_px"][0] for p in people]) for people in (single, refined)]
    torch.testing.assert_close(roots[1], roots[0], atol=0.02, rtol=0)
    assert [p["joints_3d_mm"] for p in single] != [p["joints_3d_mm"] for p in refined]
    traced = torch.jit.load(str(tmp_path / "m.pt"))
    est = PoseEstimator.from_stage_checkpoint(ckpt, refine=True, threshold=0.0)
    images = torch.rand(3, 3, 224, 224)
    for a, b in zip(TupleOutput(est)(images), traced(images), strict=True):
        torch.testing.assert_close(b, a)


def test_refine_weak_and_full_supervision_switches_train_on_the_gt_moved_into_the_crops(chain, tmp_path):
    root, teacher, aae = chain
    phase2 = root / "phase2" / "checkpoints" / "last.ckpt"
    switches = ("--model.init_args.use_weak_2d=true", "--model.init_args.use_full_3d=true")
    cli = run_stage("refine", tmp_path, teacher, aae, "--trainer.max_steps=2", *switches, init_from=phase2)
    logged = cli.trainer.logged_metrics
    assert torch.isfinite(torch.stack([v for k, v in logged.items() if k.startswith("train/loss")])).all()
    # the GT of the crops' images, moved into the crops, reaches L_2D / L_3D (whoever the random teacher finds)
    model, gt = cli.model, synthetic_batch(2, "target", torch.Generator().manual_seed(0))
    crops = person_crops(gt["roots_px"], gt["depth"], gt["mask"])
    batch = model.crop_targets(gt, crops)
    own = batch["mask"][torch.arange(len(crops.slot)), crops.slot]
    assert own.all() and (batch["roots_px"][torch.arange(len(crops.slot)), crops.slot] == 112.0).all()
    with torch.no_grad():
        losses = model.supervised_losses(model.h(model.teacher.encode(crop_images(gt["image"], crops))), batch)
    assert set(losses) == {"sup_2d", "sup_3d"} and all(v > 0 and torch.isfinite(v) for v in losses.values())
