"""Inference model, predict command, TorchScript export and the evaluate command on a tiny trained chain."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mp3d.evaluation import main as evaluate_main
from lightning_mp3d.geometry import Intrinsics, project
from lightning_mp3d.inference import PoseEstimator
from lightning_mp3d.predict import TupleOutput, export_torchscript
from lightning_mp3d.predict import main as predict_main
from lightning_mp3d.roots import find_roots


@pytest.fixture(scope="module")
def estimator(distill_checkpoint):
    # a low threshold so the untrained head reports people
    return PoseEstimator.from_stage_checkpoint(distill_checkpoint, threshold=0.0, max_people=4)


def test_subcell_roots_centroid_by_hand():
    prob = torch.zeros(1, 14, 14)
    prob[0, 5, 3] = 0.8  # row 5, col 3
    prob[0, 5, 4] = 0.8  # equal neighbour to the right: the root lies on the shared cell edge
    det = find_roots(torch.logit(prob), threshold=0.3, max_people=1, subcell=True)
    assert det.cells.tolist() == [[[3, 5]]]  # one peak per plateau: its first cell in raster order
    torch.testing.assert_close(det.roots_px, torch.tensor([[[4 * 16.0, 5.5 * 16.0]]]))
    prob[0, 5, 4] = 0.0
    det = find_roots(torch.logit(prob), threshold=0.3, max_people=1, subcell=True)
    torch.testing.assert_close(det.roots_px, torch.tensor([[[3.5 * 16, 5.5 * 16]]]))


def test_estimator_outputs_are_consistent(estimator):
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out = estimator(images)
    assert out.poses.shape == (2, 4, 15, 3) and out.keypoints.shape == (2, 4, 15, 2)
    assert out.mask.any()
    torch.testing.assert_close(out.keypoints, project(out.poses, Intrinsics.for_image(224)))
    torch.testing.assert_close(out.keypoints[..., 0, :][out.mask], out.roots_px[out.mask], atol=1e-3, rtol=0)
    assert (out.confidence[~out.mask] == 0).all()
    assert not any(p.requires_grad for p in estimator.parameters())
    with pytest.raises(ValueError, match="images must be"):
        estimator(torch.rand(1, 3, 100, 100))


def test_torchscript_export_matches_eager(estimator, tmp_path):
    traced = export_torchscript(estimator, tmp_path / "model.pt")
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    images = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(7))  # not the tracing input
    eager = TupleOutput(estimator)(images)
    for a, b, c in zip(eager, traced(images), loaded(images), strict=True):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(c, a)


def test_predict_writes_json_consistent_with_the_original_image(distill_checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"wide.png": (300, 480), "tall.jpg": (400, 250), "square.png": (224, 224)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    out = tmp_path / "pred"
    assert (
        predict_main(
            [
                "--checkpoint",
                str(distill_checkpoint),
                "--input",
                str(folder),
                "--out",
                str(out),
                "--threshold",
                "0.0",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    for name, (h, w) in sizes.items():
        stem = out / name.rsplit(".", 1)[0]
        record = json.loads(stem.with_suffix(".json").read_text())
        assert stem.with_suffix(".png").is_file()
        assert record["people"], name
        cam = record["camera"]
        # the default fit is "pad": the longer side maps to 224 px
        assert math.isclose(cam["focal_px"], 224 * max(h, w) / 224, rel_tol=1e-6)
        for person in record["people"]:
            joints = torch.tensor(person["joints_3d_mm"], dtype=torch.float64)
            uv = torch.tensor(person["joints_2d_px"], dtype=torch.float64)
            # the recorded camera reproduces the recorded 2D joints in the ORIGINAL image
            expected = cam["focal_px"] * joints[:, :2] / joints[:, 2:] + torch.tensor([cam["cx"], cam["cy"]])
            torch.testing.assert_close(uv, expected, atol=0.05, rtol=0)
            assert 0.0 <= person["root_confidence"] <= 1.0


def test_evaluate_command_on_the_embedded_target_set(distill_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(distill_checkpoint),
                "--dataset",
                "embedded",
                "--num-images",
                "4",
                "--batch-size",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert "pck3d_rel" in json.dumps(results)
    assert "Embedded target domain" in (out / "results.md").read_text()
    with pytest.raises(SystemExit):
        evaluate_main(["--checkpoint", str(distill_checkpoint), "--dataset", "mupots"])  # --root missing


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PoseEstimator.from_stage_checkpoint(tmp_path / "nope.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a distill/phase1/phase2 checkpoint"):
        PoseEstimator.from_stage_checkpoint(tmp_path / "other.ckpt")


def test_chain_report_writes_tables_for_both_protocols(distill_checkpoint, tmp_path):
    from lightning_mp3d.report import PROTOCOLS, evaluate_chain

    runs = distill_checkpoint.parents[2]  # <root>/distill/checkpoints/last.ckpt
    seeds = {"distill": [distill_checkpoint, distill_checkpoint]}
    tables = evaluate_chain(runs, tmp_path / "results", preset="test", num_images=4, seed_rows=seeds, knn_bank=3000)
    for protocol in PROTOCOLS:
        row = tables[protocol.name]["distill"]
        assert 0.0 <= row["pck3d_rel"] <= 100.0 and 0.0 <= row["pck2d"] <= 100.0
    learning = tables["learning"]
    assert set(learning) == {"distill", "mean_pose", "knn_lifting"}
    mean = learning["mean_pose"]
    assert mean["precision"] == 100 and mean["recall"] == 100 and mean["spread_ratio"] < 1e-3  # GT people, one pose
    assert mean["mpjpe_rel_detected"] == pytest.approx(mean["mean_pose_mpjpe"], rel=1e-4)
    assert learning["knn_lifting"]["mpjpe_rel_detected"] < mean["mpjpe_rel_detected"]  # exact 2D beats no 2D
    assert learning["distill"]["gt_roots_mpjpe_rel"] > 0 and "gt_roots_mpjpe_rel" not in mean
    assert tables["seeds"]["distill"]["pck3d_rel"][1] == 0.0  # the same checkpoint twice: no spread
    md = (tmp_path / "results" / "results.md").read_text()
    assert "scaled official" in md and "grid scale" in md and "L_distl" in md and "mean ± std" in md
    assert "k-NN lifting" in md and "orientation" in md
    record = json.loads((tmp_path / "results" / "results.json").read_text())
    assert record["num_images"] == 4 and set(record["tables"]) == {p.name for p in PROTOCOLS} | {"learning", "seeds"}
    assert (tmp_path / "results" / "results.png").stat().st_size > 0
    assert (tmp_path / "results" / "examples.png").stat().st_size > 0


def test_chain_report_pictures_the_chains_last_student_not_an_extra_row(distill_checkpoint, tmp_path, monkeypatch):
    """examples.png shows the chain's student (here distill), also when ablation or Ours-Fs rows come after it."""
    import shutil

    from lightning_mp3d import report

    extra = tmp_path / "ours_fs.ckpt"
    shutil.copy(distill_checkpoint, extra)
    built, pictured = {}, []
    original = PoseEstimator.from_stage_checkpoint.__func__

    def tagged(cls, path, *args, **kwargs):
        estimator = original(cls, path, *args, **kwargs)
        built[id(estimator)] = str(path)
        return estimator

    monkeypatch.setattr(PoseEstimator, "from_stage_checkpoint", classmethod(tagged))
    monkeypatch.setattr(report, "_plot_examples", lambda estimator, batch, path: pictured.append(built[id(estimator)]))
    runs = distill_checkpoint.parents[2]
    report.evaluate_chain(runs, tmp_path / "results", preset="test", num_images=2, extra_rows={"ours_fs": extra},
                          knn_bank=3000)  # fmt: skip
    assert pictured == [str(distill_checkpoint)]


def test_teacher_detection_scores_the_teachers_roots_against_the_gt_by_hand():
    """The report's teacher row: its grouped people's roots matched to the GT roots within one cell (16 px)."""
    from lightning_mp3d.detection import teacher_detection
    from lightning_mp3d.grouping import GroupedPeople

    gt = {"gt_roots_px": torch.tensor([[[50.0, 50.0], [150.0, 100.0], [100.0, 180.0], [9.0, 9.0]]]),
          "gt_mask": torch.tensor([[True, True, True, False]]), "image": torch.zeros(1, 3, 8, 8)}  # fmt: skip

    roots = torch.tensor([[[55.0, 45.0], [200.0, 20.0], [151.0, 99.0], [9.0, 9.0]]])  # 2 within 16 px
    mask = torch.tensor([[True, True, True, False]])  # the 4th is padding (it sits on the masked GT)
    people = GroupedPeople(torch.zeros(1, 4, 15, 2), torch.zeros(1, 4, 15), mask, roots)

    got = teacher_detection([people, people], [gt, gt])
    assert (got["people_pred"], got["people_gt"]) == (6, 6)
    assert got["precision"] == pytest.approx(100 * 4 / 6) and got["recall"] == pytest.approx(100 * 4 / 6)
