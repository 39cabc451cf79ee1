"""D_I datamodule: on-the-fly rendering per rank, rendered shards, real image folders and shards."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mp3d.datamodules.image_shards import folder_to_shards, write_image_shards
from lightning_mp3d.datamodules.images import ImageDataModule, SyntheticImageDataset
from lightning_mp3d.datamodules.real_images import ImageFolderDataset, ImageShardDataset, iter_shard
from lightning_mp3d.imageio import Letterbox, fit_image
from lightning_mp3d.synth.batches import GT_KEYS


def _input_to_original(letterbox: torch.Tensor) -> torch.Tensor:
    """(scale, offset_x, offset_y) of ``original_px = scale * input_px + offset``, the inverse of a letterbox."""
    s, ox, oy = letterbox.unbind(-1)
    return torch.stack((1 / s, -ox / s, -oy / s), -1)


def _write_images(folder: Path) -> dict[str, np.ndarray]:
    """Three small images (PNG, JPEG, PNG in a subfolder) with one marked pixel each; returns the arrays."""
    rng = np.random.default_rng(0)
    arrays = {}
    specs = {"a.png": (120, 200), "b.jpg": (300, 150), "sub/c.png": (224, 224)}
    for name, (h, w) in specs.items():
        array = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path, quality=95)
        arrays[name] = array
    return arrays


def test_two_ranks_get_different_images_and_epochs_differ():
    r0 = next(iter(SyntheticImageDataset(2, 1, "target", seed=5, rank=0)))
    r0_again = next(iter(SyntheticImageDataset(2, 1, "target", seed=5, rank=0)))
    r1 = next(iter(SyntheticImageDataset(2, 1, "target", seed=5, rank=1)))
    ds = SyntheticImageDataset(2, 1, "target", seed=5, rank=0)
    ds.set_epoch(1)
    e1 = next(iter(ds))
    assert torch.equal(r0["image"], r0_again["image"])
    assert not torch.allclose(r0["image"], r1["image"])
    assert not torch.allclose(r0["image"], e1["image"])
    assert set(GT_KEYS) | {"image"} == set(r0)


def test_rendered_shard_round_trip(tmp_path):
    paths = write_image_shards(tmp_path, 3, "source", seed=1, batch_size=2, images_per_shard=2, progress=False)
    assert [p.name for p in paths] == ["source-000000.tar", "source-000001.tar"]
    samples = list(ImageShardDataset(str(tmp_path / "*.tar")))
    assert [s["key"] for s in samples] == ["source_00000000", "source_00000001", "source_00000002"]
    # the same images and GT, re-rendered from the same seed (PNG is 8-bit: images agree to 1/255)
    from lightning_mp3d.synth.batches import synthetic_batch

    gen = torch.Generator().manual_seed(1)
    ref = [synthetic_batch(2, "source", gen), synthetic_batch(1, "source", gen)]
    ref_images = torch.cat([r["image"] for r in ref])
    for i, s in enumerate(samples):
        torch.testing.assert_close(s["image"], ref_images[i], atol=0.5 / 255 + 1e-6, rtol=0)
        torch.testing.assert_close(s["letterbox"], torch.tensor([1.0, 0.0, 0.0]))
        for key in GT_KEYS:
            expected = torch.cat([r[key] for r in ref])[i]
            assert s[key].dtype == expected.dtype and torch.equal(s[key], expected), key


def test_fit_image_transform_maps_a_known_pixel_back():
    image = torch.zeros(3, 120, 200)
    image[:, 60, 130] = 1.0  # original pixel centre (130.5, 60.5)
    for mode in ("crop", "pad"):
        fitted = fit_image(image, 224, mode)
        assert fitted.image.shape == (3, 224, 224)
        torch.testing.assert_close(fitted.original_size, torch.tensor([120.0, 200.0]))
        row, col = divmod(int(fitted.image[0].argmax()), 224)
        back = Letterbox.from_tensor(fitted.letterbox).to_original(torch.tensor([[col + 0.5, row + 0.5]]))[0]
        tolerance = float(1 / fitted.letterbox[0] + 1e-4)
        torch.testing.assert_close(
            back, torch.tensor([130.5, 60.5]), atol=tolerance, rtol=0, msg=lambda m, mode=mode: f"{mode}: {m}"
        )
    # crop: scale 120/224 on both axes; the 200-wide image resized to 373 px is cropped by (373 - 224) // 2 = 74
    # resized px on the left, 74 * 120 / 224 = 39.64 original px (the ideal 40 up to whole resized pixels)
    crop = _input_to_original(fit_image(image, 224, "crop").letterbox)
    torch.testing.assert_close(crop, torch.tensor([120 / 224, 74 * 120 / 224, 0.0]), atol=1e-4, rtol=0)
    # pad: scale 200/224, the 120-high image is padded: offset_y = -(224 - 134) / 2 input px in original px
    pad = _input_to_original(fit_image(image, 224, "pad").letterbox)
    torch.testing.assert_close(pad[:2], torch.tensor([200 / 224, 0.0]), atol=2e-3, rtol=0)
    assert pad[2] < 0


def test_image_folder_to_224_with_transform(tmp_path):
    arrays = _write_images(tmp_path / "imgs")
    ds = ImageFolderDataset(tmp_path / "imgs")
    assert [ds[i]["key"] for i in range(len(ds))] == ["a.png", "b.jpg", "sub/c.png"]
    item = ds[0]
    assert item["image"].shape == (3, 224, 224)
    # a 224 x 224 PNG passes through unchanged with the identity transform
    c = ds[2]
    torch.testing.assert_close(c["letterbox"], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(c["image"], torch.from_numpy(arrays["sub/c.png"]).permute(2, 0, 1).float() / 255)


def test_folder_to_shards_round_trip(tmp_path):
    _write_images(tmp_path / "imgs")
    paths = folder_to_shards(tmp_path / "imgs", tmp_path / "shards", images_per_shard=2, progress=False)
    assert len(paths) == 2
    from_shards = {s["key"]: s for s in ImageShardDataset([str(p) for p in paths])}
    folder = ImageFolderDataset(tmp_path / "imgs")
    assert sorted(from_shards) == ["a", "b", "sub_c"]
    for i, key in enumerate(["a", "b", "sub_c"]):
        ref = folder[i]
        torch.testing.assert_close(from_shards[key]["image"], ref["image"])
        torch.testing.assert_close(from_shards[key]["letterbox"], ref["letterbox"])
        torch.testing.assert_close(from_shards[key]["original_size"], ref["original_size"])


def test_corrupt_shard_and_unreadable_image_name_the_file(tmp_path):
    bad = tmp_path / "bad-000000.tar"
    bad.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(ValueError, match="bad-000000.tar"):
        list(iter_shard(str(bad)))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        ImageFolderDataset(tmp_path / "imgs")[0]
    with pytest.raises(ValueError, match="broken.jpg"):
        folder_to_shards(tmp_path / "imgs", tmp_path / "out", progress=False)


def test_datamodule_synthetic_train_and_fixed_validation_sets():
    dm = ImageDataModule(style="source", batch_size=2, batches_per_epoch=2, val_size=2, seed=0)
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 2 and train[0]["image"].shape == (2, 3, 224, 224)
    vals = dm.val_dataloader()
    assert len(vals) == 2  # one per val style, in val_styles order
    v0 = next(iter(vals[0]))
    assert v0["image"].shape == (2, 3, 224, 224) and v0["visibility"].shape[-1] == 15
    again = ImageDataModule(style="source", batch_size=2, val_size=2, seed=0)
    again.setup("fit")
    assert torch.equal(next(iter(again.val_dataloader()[0]))["image"], v0["image"])
    assert not torch.equal(next(iter(vals[1]))["image"], v0["image"])


def test_datamodule_reads_an_image_folder(tmp_path):
    _write_images(tmp_path / "imgs")
    dm = ImageDataModule(train=str(tmp_path / "imgs"), batch_size=3, val_size=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 224, 224) and batch["letterbox"].shape == (3, 3)
    assert sorted(batch["key"]) == ["a.png", "b.jpg", "sub/c.png"]
    with pytest.raises(ValueError, match="train must be"):
        ImageDataModule(train=str(tmp_path / "nope")).setup("fit")
