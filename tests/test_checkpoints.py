"""The stage record and its one reader (``lightning_mp3d.checkpoints``)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from lightning_mp3d import checkpoints
from lightning_mp3d.checkpoints import STAGE_KEY, stage_record
from lightning_mp3d.models.student import SceneHead, student_model_args


def _student_checkpoint(run: str, folder, teacher, aae, h_width: int = 8):
    """A phase-1-like checkpoint in ``folder`` whose record names ``teacher`` and ``aae`` (relative to ``folder``)."""
    models = student_model_args(24, {"h_width": h_width, "h_fc_channels": 8, "g_hidden": 8})
    torch.manual_seed(0)
    head = SceneHead(**models["h"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "last.ckpt"
    record = stage_record(run, models, {"teacher": teacher, "aae": aae, "init_from": None}, folder)
    torch.save({"state_dict": {f"h.{k}": v for k, v in head.state_dict().items()}, STAGE_KEY: record}, path)
    return path, head


def test_upstream_paths_are_stored_relative_to_the_checkpoint_and_follow_a_copied_run_folder(tmp_path):
    runs = tmp_path / "runs"
    for name in ("teacher", "aae"):
        (runs / name).mkdir(parents=True)
        (runs / name / "last.ckpt").write_bytes(b"x")
    path, head = _student_checkpoint("phase1", runs / "phase1" / "checkpoints", runs / "teacher/last.ckpt",
                                     runs / "aae/last.ckpt")  # fmt: skip
    record = torch.load(path, weights_only=True)[STAGE_KEY]
    assert record["upstream"] == {"teacher": "../../teacher/last.ckpt", "aae": "../../aae/last.ckpt"}
    shutil.copytree(runs, tmp_path / "moved")
    ckpt = checkpoints.read(tmp_path / "moved/phase1/checkpoints/last.ckpt", expect_stage="phase1")
    assert ckpt.stage == "phase1" and set(ckpt.models) == {"h", "g", "scene_decoder"}
    assert all(p.resolve().is_relative_to(tmp_path / "moved") and p.is_file() for p in ckpt.upstream.values())
    rebuilt = ckpt.build(SceneHead, "h")
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), head.state_dict().values()))
    # a checkpoint copied elsewhere alone finds them from the folder it was written in
    path, _ = _student_checkpoint("phase1", runs / "phase1", runs / "teacher/last.ckpt", runs / "aae/last.ckpt")
    shutil.copy(path, tmp_path / "copy.ckpt")
    assert checkpoints.read(tmp_path / "copy.ckpt").upstream["teacher"] == runs / "phase1/../teacher/last.ckpt"


def test_read_names_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"AAE checkpoint not found: '.*nope.ckpt'.*stage_aae.yaml"):
        checkpoints.read(tmp_path / "nope.ckpt", expect_stage="aae", what="AAE checkpoint")
    torch.save({"weights": 1}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"other.ckpt' is not a Lightning checkpoint"):
        checkpoints.read(tmp_path / "other.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(ValueError, match=r"bare.ckpt' is not an AAE stage checkpoint \(no 'lightning_mp3d_stage'"):
        checkpoints.read(tmp_path / "bare.ckpt", expect_stage="aae")
    path, _ = _student_checkpoint("distill", tmp_path / "d", "t.ckpt", "a.ckpt")
    with pytest.raises(ValueError, match=r"init_from '.*last.ckpt' is a 'distill' checkpoint, expected 'phase1'"):
        checkpoints.read(path, expect_stage="phase1", what="init_from")
    with pytest.raises(ValueError, match=r"is a 'distill' checkpoint, expected one of \['teacher', 'aae'\]"):
        checkpoints.read(path, expect_stage=("teacher", "aae"))
    wide = checkpoints.read(path)._replace(models={"h": {**student_model_args(24, {"h_width": 16})["h"]}})
    with pytest.raises(ValueError, match=r"its 'h' weights do not fit the SceneHead built here .*width=16"):
        wide.build(SceneHead, "h")


def test_checkpoints_written_before_the_record_are_still_read(tmp_path, monkeypatch):
    # the student stages' old record: stage, v_channels and the upstream paths as the config gave them (cwd-relative)
    models = student_model_args(24, {"h_width": 8, "h_fc_channels": 8})
    head = SceneHead(**models["h"])
    old = {"stage": "phase2", "v_channels": 24, "teacher_checkpoint": "runs/t.ckpt", "aae_checkpoint": "runs/a.ckpt"}
    hparams = {"h_width": 8, "h_fc_channels": 8, "g_hidden": 8, "depth_scale_mm": 4000.0}
    state = {f"h.{k}": v for k, v in head.state_dict().items()}
    torch.save({"state_dict": state, STAGE_KEY: old, "hyper_parameters": hparams}, tmp_path / "old.ckpt")
    monkeypatch.chdir(tmp_path)
    ckpt = checkpoints.read(tmp_path / "old.ckpt", expect_stage="phase2")
    assert ckpt.upstream["teacher"].resolve() == tmp_path / "runs/t.ckpt"
    assert ckpt.models["scene_decoder"] == {"depth_scale_mm": 4000.0} and ckpt.models["g"]["hidden"] == 8
    ckpt.build(SceneHead, "h")


def test_aae_checkpoints_from_before_psi_was_renamed_give_the_same_pose_decoder(tmp_path):
    # Ψ's weights were ``decoder.*`` (the name the student stages' M also had); now ``pose_decoder.*``
    from lightning_mp3d.models.aae import PoseDecoder, load_pose_decoder
    from lightning_mp3d.systems.aae import AAEPretraining

    torch.manual_seed(0)
    psi = PoseDecoder(width=16, depth=1)
    old_state = {f"decoder.{k}": v for k, v in psi.state_dict().items()} | {"encoder.w": torch.zeros(1)}
    files = {
        "record": {"state_dict": old_state, STAGE_KEY: stage_record("aae", {"decoder": psi.config})},
        "legacy": {"state_dict": old_state, "lightning_mp3d_pose_decoder": psi.config},  # before the record
        "current": {
            "state_dict": checkpoints.renamed_state_dict("aae", old_state),
            STAGE_KEY: stage_record("aae", {"pose_decoder": psi.config}),
        },
    }
    phi = torch.rand(8, 32) * 2 - 1
    for name, ckpt in files.items():
        torch.save(ckpt, tmp_path / f"{name}.ckpt")
        read = checkpoints.read(tmp_path / f"{name}.ckpt", expect_stage="aae")
        assert set(read.models) == {"pose_decoder"} and set(read.weights("encoder")) == {"w"}, name
        torch.testing.assert_close(load_pose_decoder(tmp_path / f"{name}.ckpt")(phi), psi(phi), rtol=0, atol=0)
    assert set(files["current"]["state_dict"]) == {f"pose_decoder.{k}" for k in psi.state_dict()} | {"encoder.w"}
    # resuming the AAE stage itself from such a checkpoint (``--ckpt_path``): the hook renames before loading
    model = AAEPretraining(pose_decoder={"width": 16, "depth": 1})
    resumed = {"state_dict": {f"decoder.{k}": v for k, v in model.pose_decoder.state_dict().items()}}
    model.on_load_checkpoint(resumed)
    assert set(resumed["state_dict"]) == {f"pose_decoder.{k}" for k in model.pose_decoder.state_dict()}


def test_write_gives_a_checkpoint_that_read_rebuilds_exactly(tmp_path):
    from lightning_mp3d.models.aae import PoseDecoder

    torch.manual_seed(0)
    psi = PoseDecoder(width=16, depth=1)
    path = checkpoints.write(tmp_path / "aae.ckpt", "aae", {"pose_decoder": psi}, {"pose_decoder": psi.config})
    ckpt = checkpoints.read(path, expect_stage="aae")
    assert ckpt.stage == "aae" and ckpt.upstream == {} and ckpt.models == {"pose_decoder": psi.config}
    phi = torch.rand(8, 32) * 2 - 1
    torch.testing.assert_close(ckpt.build(PoseDecoder, "pose_decoder")(phi), psi(phi), rtol=0, atol=0)


def test_checkpoints_module_does_not_import_lightning():
    code = "import sys, lightning_mp3d.checkpoints; assert not {'lightning', 'pytorch_lightning'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
