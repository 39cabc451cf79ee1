"""Inputs a user hands to the stages and ``mp3d-predict``: phone JPEGs with an EXIF rotation, 16-bit grayscale PNGs,
extreme aspect ratios, oversized images, unreadable files, same-named images, shard keys that try to leave ``--out``,
a stage checkpoint whose teacher/AAE files moved, an image folder smaller than a batch and broken MoCap files."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mp3d import checkpoints, imageio
from lightning_mp3d.checkpoints import STAGE_KEY
from lightning_mp3d.datamodules.images import ImageDataModule
from lightning_mp3d.datamodules.poses import load_pose_file
from lightning_mp3d.imageio import decode_image, fit_image
from lightning_mp3d.inference import PoseEstimator
from lightning_mp3d.predict import main as predict_main


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_an_exif_rotated_jpeg_is_decoded_upright():
    pixels = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high: left half red, right half blue
    pixels[:, :20, 0] = 255
    pixels[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the upright photo is 20 wide, 40 high, red on top
    image = decode_image(_bytes(Image.fromarray(pixels), "JPEG", exif=exif, quality=95), "phone.jpg")
    assert image.shape == (3, 40, 20)
    assert image[0, :15].mean() > 0.9 and image[2, :15].mean() < 0.1  # red on top
    assert image[2, 25:].mean() > 0.9  # blue below


def test_a_16_bit_grayscale_png_keeps_its_brightness():
    gray = np.full((8, 8), 32768, np.uint16)  # half of 16-bit full scale
    image = decode_image(_bytes(Image.fromarray(gray), "PNG"), "depth16.png")
    torch.testing.assert_close(image, torch.full((3, 8, 8), 32768 / 65535), atol=1e-4, rtol=0)


def test_an_oversized_image_is_a_clear_per_file_error(monkeypatch):
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=r"cannot read image big\.png: 20x20 pixels is over the limit of 100"):
        decode_image(_bytes(Image.new("RGB", (20, 20)), "PNG"), "big.png")


def test_fitting_uses_one_scale_for_both_axes_and_refuses_extreme_aspect_ratios():
    # 310 x 20: the short side scales to 14.45 px; two separately rounded sizes (224, 14) recorded a scale 1.6% off
    for mode in ("pad", "crop"):
        fitted = fit_image(torch.rand(3, 20, 310), 224, mode)
        expected = (310 if mode == "pad" else 20) / 224  # original px per input px
        torch.testing.assert_close(1 / fitted.letterbox[0], torch.tensor(expected), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"image 1000x30: aspect ratio over 16:1"):
        fit_image(torch.rand(3, 30, 1000), 224, "pad")


def _args(checkpoint, source, out, *extra):
    return ["--checkpoint", str(checkpoint), "--input", str(source), "--out", str(out), "--no-png", *extra]


def test_predict_keeps_same_named_images_apart_and_reports_a_broken_one_after_the_others(
    distill_checkpoint,
    tmp_path,
    capsys,
):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    assert predict_main(_args(distill_checkpoint, folder, out)) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.json", "a.png.json", "b.json"]
    assert "broken.png: cannot read image" in capsys.readouterr().err


def test_predict_confines_shard_keys_to_out(distill_checkpoint, tmp_path, capsys):  # noqa: F811
    shard = tmp_path / "in.tar"
    jpeg = _bytes(Image.new("RGB", (64, 64), "gray"), "JPEG")
    with tarfile.open(shard, "w") as tar:
        for name in ("good.jpg", "../../escaped.jpg", "/tmp/absolute_escape.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(jpeg)
            tar.addfile(info, io.BytesIO(jpeg))
    out = tmp_path / "deep" / "er" / "pred"
    assert predict_main(_args(distill_checkpoint, shard, out)) == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.json"]
    assert not (tmp_path / "deep" / "escaped.json").exists() and not list(tmp_path.glob("**/absolute_escape*"))
    err = capsys.readouterr().err
    assert "'../../escaped' would write outside --out" in err and "'/tmp/absolute_escape' would write outside" in err


def test_a_moved_stage_checkpoint_names_the_missing_teacher_and_takes_its_new_location(
    distill_checkpoint,
    tmp_path,
):
    ckpt = torch.load(distill_checkpoint, map_location="cpu", weights_only=True)
    upstream = checkpoints.read(distill_checkpoint).upstream
    teacher, aae = upstream["teacher"], upstream["aae"]
    ckpt[STAGE_KEY]["upstream"] = {"teacher": "gone/teacher.ckpt", "aae": "gone/aae.ckpt"}
    moved = tmp_path / "moved.ckpt"
    torch.save(ckpt, moved)
    with pytest.raises(FileNotFoundError, match=r"teacher checkpoint '.*/gone/teacher.ckpt'.*--teacher-checkpoint"):
        PoseEstimator.from_stage_checkpoint(moved)
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "x.png")
    out = tmp_path / "pred"
    args = _args(moved, folder, out, "--teacher-checkpoint", str(teacher), "--aae-checkpoint", str(aae))
    assert predict_main(args) == 0 and (out / "x.json").is_file()


def test_an_image_folder_smaller_than_a_batch_is_an_error_not_an_empty_run(tmp_path):
    for i in range(3):
        Image.new("RGB", (32, 32)).save(tmp_path / f"{i}.png")
    data = ImageDataModule(train=str(tmp_path), batch_size=8, val_size=0)
    with pytest.raises(ValueError, match=r"holds 3 images, fewer than batch_size=8"):
        data.setup("fit")


def test_degenerate_or_unreadable_mocap_files_are_refused_naming_the_file(tmp_path):
    from lightning_mp3d.synth.poses import sample_artificial_poses

    poses = sample_artificial_poses(10, torch.Generator().manual_seed(0), dtype=torch.float64, device="cpu")
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, poses=np.concatenate([poses.numpy(), np.zeros((3, 15, 3))]))
    with pytest.raises(ValueError, match=r"mixed\.npz: 3 of 13 poses are degenerate .* e\.g\. pose 10"):
        load_pose_file(mixed)
    assert load_pose_file(_save_npz(tmp_path / "fine.npz", poses.numpy())).shape == (10, 15, 3)

    array_as_npz = tmp_path / "array.npz"
    with array_as_npz.open("wb") as f:
        np.save(f, poses.numpy())  # a bare .npy array under an .npz name
    with pytest.raises(ValueError, match=r"array\.npz holds one array, not an \.npz archive"):
        load_pose_file(array_as_npz)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((tmp_path / "fine.npz").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"truncated\.npz: cannot read the pose file"):
        load_pose_file(truncated)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not a numpy file")  # NumPy: "This file contains pickled (object) data", no file named
    with pytest.raises(ValueError, match=r"garbage\.npy: cannot read the pose file"):
        load_pose_file(garbage)
    with pytest.raises(ValueError, match=r"wrong\.npz: poses in 'ours' order must be \(N, 15, 3\)"):
        load_pose_file(_save_npz(tmp_path / "wrong.npz", poses.numpy()[:, :14]), joint_order="ours")


def _save_npz(path, poses):
    np.savez(path, poses=poses)
    return path


def test_malformed_mupots_annotations_name_the_file(tmp_path):
    import scipy.io

    from lightning_mp3d.datamodules.mupots import load_sequence

    ts = tmp_path / "TS1"
    ts.mkdir()
    (ts / "annot.mat").write_bytes(b"this is not a MATLAB file" * 10)
    (ts / "occlusion.mat").write_bytes(b"neither")
    with pytest.raises(ValueError, match=r"TS1/annot\.mat: cannot read as a MATLAB \.mat file"):
        load_sequence(ts)
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = {"annot2": np.zeros((2, 16)), "annot3": np.zeros((3, 17)), "univ_annot3": np.zeros((3, 17)),
                   "isValidFrame": 1}  # fmt: skip
    scipy.io.savemat(ts / "annot.mat", {"annotations": cells})
    with pytest.raises(ValueError, match=r"TS1/annot\.mat: frame 0, person 0: joints must be 2x17"):
        load_sequence(ts)


def test_truncated_garbage_or_mismatched_stage_checkpoints_are_errors_naming_the_file(
    distill_checkpoint,
    tmp_path,
):
    truncated, garbage, wide = tmp_path / "truncated.ckpt", tmp_path / "garbage.ckpt", tmp_path / "wide.ckpt"
    truncated.write_bytes(distill_checkpoint.read_bytes()[:5000])
    garbage.write_bytes(b"hello" * 100)  # torch.load: "KeyError: 101"
    ckpt = torch.load(distill_checkpoint, map_location="cpu", weights_only=True)
    ckpt[STAGE_KEY]["models"]["h"]["width"] *= 2
    torch.save(ckpt, wide)
    for path in (truncated, garbage):
        with pytest.raises(ValueError, match=rf"{path.name}' cannot be read \(\d+ bytes\): truncated, corrupt"):
            PoseEstimator.from_stage_checkpoint(path)
    with pytest.raises(ValueError, match=r"wide\.ckpt': its 'h' weights do not fit the SceneHead built here"):
        PoseEstimator.from_stage_checkpoint(wide)
