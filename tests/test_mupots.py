"""MuPoTS-3D loader on fixtures written in the real annot.mat / occlusion.mat format, intrinsics fit, evaluation run."""

import json

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from lightning_mp3d.datamodules.mupots import (
    MuPoTSDataModule,
    MuPoTSDataset,
    fit_intrinsics,
    load_sequence,
)
from lightning_mp3d.evaluation import evaluate, write_results
from lightning_mp3d.imageio import Letterbox
from lightning_mp3d.skeleton import MUPOTS17_TO_OURS
from tests.helpers import as_the_model_sees_it

FX, FY, CX, CY = 1500.0, 1480.0, 1010.0, 530.0  # known intrinsics of the fixture (1920 x 1080 frames)


def _pose17(rng: np.random.Generator, x: float) -> np.ndarray:
    p = rng.normal(0.0, 250.0, (17, 3))
    p[14] = 0.0  # pelvis
    return p + np.array([x, 100.0, 4500.0])


def _write_sequence(ts_dir, rng, frames=3, people=2, invalid=((1, 1),)):
    ts_dir.mkdir(parents=True)
    annotations = np.empty((frames, people), dtype=object)
    occlusion = np.empty((frames, people), dtype=object)
    truth = np.zeros((frames, people, 17, 3))
    for i in range(frames):
        for k in range(people):
            a3 = _pose17(rng, -700.0 + 1400.0 * k)
            a2 = np.stack((FX * a3[:, 0] / a3[:, 2] + CX, FY * a3[:, 1] / a3[:, 2] + CY), 1)
            annotations[i, k] = {
                "annot2": a2.T,  # 2 x 17
                "annot3": a3.T,  # 3 x 17
                "univ_annot3": (0.9 * (a3 - a3[14]) + a3[14]).T,
                "isValidFrame": np.array([[0.0 if (i, k) in invalid else 1.0]]),
            }
            occlusion[i, k] = (rng.random((1, 17)) < 0.2).astype(np.uint8)
            truth[i, k] = a3
        Image.fromarray((rng.random((1080, 1920, 3)) * 255).astype(np.uint8)).save(ts_dir / f"img_{i:06d}.jpg")
    scipy.io.savemat(ts_dir / "annot.mat", {"annotations": annotations})
    scipy.io.savemat(ts_dir / "occlusion.mat", {"occlusion_labels": occlusion})
    return truth


@pytest.fixture
def mupots_root(tmp_path):
    rng = np.random.default_rng(0)
    truths = {n: _write_sequence(tmp_path / f"TS{n}", rng) for n in (1, 2)}
    return tmp_path, truths


def test_loader_reads_the_real_mat_layout(mupots_root):
    root, truths = mupots_root
    raw = scipy.io.loadmat(root / "TS1" / "annot.mat")["annotations"]
    assert raw.shape == (3, 2) and raw[0, 0]["annot2"][0, 0].shape == (2, 17)  # cell (frames x people) of structs
    seq = load_sequence(root / "TS1")
    np.testing.assert_allclose(seq.annot3, truths[1])
    assert seq.valid.tolist() == [[True, True], [True, False], [True, True]]
    assert seq.occluded.shape == (3, 2, 17)
    ds = MuPoTSDataset(root)
    assert len(ds) == 6 and ds.max_people == 2
    item = ds[4]  # TS2 frame 1
    assert item["image"].shape == (3, 224, 224) and item["sequence"].item() == 1
    np.testing.assert_allclose(item["gt_poses"][0].numpy(), truths[2][1, 0][list(MUPOTS17_TO_OURS)], rtol=1e-6)
    back = Letterbox.from_tensor(item["letterbox"]).to_original(item["gt_2d_input"])
    torch.testing.assert_close(back, item["gt_2d"], atol=1e-3, rtol=0)
    assert item["gt_2d_input"][item["gt_mask"]].min() >= 0 and item["gt_2d_input"][item["gt_mask"]].max() <= 224


def test_intrinsics_fit_recovers_known_camera(mupots_root):
    root, _ = mupots_root
    seq = load_sequence(root / "TS1")
    cam = fit_intrinsics(seq.annot2, seq.annot3, seq.valid)
    np.testing.assert_allclose(cam, (FX, FY, CX, CY), rtol=1e-6)
    (root / "cams.json").write_text(json.dumps({"TS1": {"fx": 1.0, "fy": 2.0, "cx": 3.0, "cy": 4.0}}))
    ds = MuPoTSDataset(root, sequences=[1, 2], intrinsics_json=root / "cams.json")
    assert ds[0]["intrinsics"].tolist() == [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(ds[3]["intrinsics"].numpy(), (FX, FY, CX, CY), rtol=1e-4)  # TS2 still fitted


def test_missing_file_and_field_errors_name_them(tmp_path):
    (tmp_path / "TS1").mkdir()
    with pytest.raises(ValueError, match="annot.mat"):
        load_sequence(tmp_path / "TS1")
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = {"annot2": np.zeros((2, 17))}
    scipy.io.savemat(tmp_path / "TS1" / "annot.mat", {"annotations": cells})
    scipy.io.savemat(tmp_path / "TS1" / "occlusion.mat", {"occlusion_labels": cells})
    with pytest.raises(ValueError, match="annot3"):
        load_sequence(tmp_path / "TS1")


def test_evaluation_with_an_oracle_predictor_scores_everything_perfectly(mupots_root, tmp_path):
    root, _ = mupots_root
    dm = MuPoTSDataModule(str(root), batch_size=4)
    batches = list(dm.test_dataloader())

    lookup = {id(b["image"]): b for b in batches}

    def oracle(images):  # returns the GT as the model sees it (224-px input camera); people listed in reverse order
        b = lookup[id(images)]
        return as_the_model_sees_it(b).flip(1), b["gt_2d_input"].flip(1), b["gt_mask"].flip(1)

    r = evaluate(oracle, batches, num_sequences=20)
    assert r.pck3d_rel_plain.pck_all.item() == 1.0
    assert r.pck3d_rel.pck_all.item() == 1.0  # univ GT is a scaled annot3: the bone rescaling absorbs it
    assert r.pck3d_abs_250.pck_all.item() == 1.0
    assert r.mpjpe.mpjpe.item() < 1e-3 and r.pck2d.pck_all.item() == 1.0
    assert r.box_iou.iou_matched.item() == pytest.approx(1.0, abs=1e-4)
    assert r.pck3d_rel.per_sequence_all[:2].tolist() == [1.0, 1.0] and r.pck3d_rel.per_sequence_all[2:].isnan().all()
    md, js = write_results(r, tmp_path / "out", "MuPoTS fixture")
    assert "| all | 100.0 | 100.0 | 100.0 |" in md.read_text()
    assert json.loads(js.read_text())["pck3d_rel"]["per_sequence_all"]["TS2"] == 100.0

    def lossy(images):  # keeps only slot 0 = GT person 1, which is valid in 2 of 3 frames per sequence
        p, k, m = oracle(images)
        m = m.clone()
        m[:, 1:] = False
        return p, k, m

    r = evaluate(lossy, batches, num_sequences=20)
    assert r.pck3d_rel.pck_matched.item() == 1.0
    assert r.pck3d_rel.pck_all_pooled.item() == pytest.approx(4 / 10)  # 10 valid GT people, 4 predicted
