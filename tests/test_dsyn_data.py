"""D_syn batches: seeding per rank/worker/epoch, shard round trip, corrupt shards, the DataModule, the preview."""

import os

import numpy as np
import pytest
import torch

from lightning_mp3d.datamodules.dsyn import (
    BATCH_KEYS,
    DSynDataModule,
    DSynDataset,
    load_pose_bank,
    write_dsyn_shards,
)
from lightning_mp3d.datamodules.shards import stack_examples, tensor_shard_pipeline, write_tensor_shards
from lightning_mp3d.synth import preview

SMALL = {"max_people": 3}


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in BATCH_KEYS)


def test_batch_has_the_documented_keys_and_shapes():
    batch = DSynDataset(3, 1, seed=0).batch(0)
    assert set(batch) == set(BATCH_KEYS)
    assert batch["maps"].shape == (3, 43, 28, 28)
    assert batch["poses"].shape == (3, 4, 15, 3) and batch["mask"].dtype == torch.bool


def test_same_seed_reproduces_and_ranks_epochs_splits_differ():
    a, b = DSynDataset(4, 2, seed=7), DSynDataset(4, 2, seed=7)
    assert _equal(a.batch(1), b.batch(1))
    assert not torch.equal(a.batch(0)["poses"], a.batch(1)["poses"])
    other_rank = DSynDataset(4, 2, seed=7, rank=1, world_size=2)
    assert not torch.equal(a.batch(0)["poses"], other_rank.batch(0)["poses"])
    other_split = DSynDataset(4, 2, seed=7, split=1)
    assert not torch.equal(a.batch(0)["poses"], other_split.batch(0)["poses"])
    b.set_epoch(1)
    assert not torch.equal(a.batch(0)["poses"], b.batch(0)["poses"])


def test_two_workers_split_batches_without_duplicates():
    dm = DSynDataModule(batch_size=2, train_batches=4, num_workers=2, seed=3, max_people=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first, second = list(loader), list(loader)
    assert len(first) == 4
    ref = DSynDataset(2, 4, seed=3, scene_kwargs=dm.scene_kwargs, map_kwargs=dm.map_kwargs)
    refs = [ref.batch(i) for i in range(4)]  # workers may return them in any order
    assert all(any(_equal(batch, r) for r in refs) for batch in first)
    poses = torch.stack([b["poses"] for b in first])
    assert len({p.sum().item() for p in poses}) == 4  # four different batches
    assert not any(torch.equal(x["poses"], y["poses"]) for x, y in zip(first, second))  # new epoch, new scenes
    val = list(dm.val_dataloader())
    assert len(val) == dm.hparams.val_batches and _equal(val[0], list(dm.val_dataloader())[0])


def test_shard_round_trip_reproduces_the_tensors(tmp_path):
    paths = write_dsyn_shards(
        tmp_path, 21, seed=5, samples_per_shard=8, generate_batch_size=6, progress=False, scene_kwargs=SMALL
    )
    assert [os.path.basename(p) for p in paths] == ["dsyn-000000.tar", "dsyn-000001.tar", "dsyn-000002.tar"]
    assert not list(tmp_path.glob("*.tmp"))
    ds = DSynDataset(6, 4, seed=5, scene_kwargs=SMALL)
    expected = {k: torch.cat([ds.batch(i)[k] for i in range(4)])[:21] for k in BATCH_KEYS}
    got = stack_examples(list(tensor_shard_pipeline(tmp_path)))
    assert _equal(got, expected)


def test_shards_split_disjointly_over_ranks(tmp_path):
    batch = {"x": torch.arange(12).view(12, 1)}
    write_tensor_shards(tmp_path, [batch], samples_per_shard=3, progress=False)
    seen = [torch.cat([s["x"] for s in tensor_shard_pipeline(tmp_path, rank=r, world_size=2)]) for r in (0, 1)]
    assert sorted(torch.cat(seen).tolist()) == list(range(12))
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist())


def test_datamodule_reads_shards_in_equal_batches(tmp_path):
    write_dsyn_shards(tmp_path, 10, samples_per_shard=4, generate_batch_size=5, progress=False, scene_kwargs=SMALL)
    dm = DSynDataModule(batch_size=4, train_batches=5, shards=str(tmp_path), val_shards=str(tmp_path), **SMALL)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 5 and all(b["maps"].shape == (4, 43, 28, 28) for b in batches)
    assert set(batches[0]) == set(BATCH_KEYS)


def test_corrupt_shard_names_the_file(tmp_path):
    paths = write_dsyn_shards(tmp_path, 4, samples_per_shard=4, generate_batch_size=4, progress=False)
    data = open(paths[0], "rb").read()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(data[: len(data) // 2 + 100])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar" * 200)
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=str(bad.name)):
            list(tensor_shard_pipeline([str(bad)], keys=BATCH_KEYS))
    with pytest.raises(ValueError, match="not found"):
        tensor_shard_pipeline([str(tmp_path / "missing.tar")])


def test_pose_bank_file_is_checked(tmp_path):
    good = tmp_path / "poses.npy"
    bank = DSynDataset(1, 1).batch(0)["canonical"][0, :1].numpy()
    np.save(good, bank)
    assert load_pose_bank(good).shape == (1, 15, 3)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 14, 3)))
    with pytest.raises(ValueError, match=r"bad\.npy.*\(4, 14, 3\)"):
        load_pose_bank(bad)
    dm = DSynDataModule(batch_size=2, train_batches=1, pose_bank=str(good), max_people=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    m = batch["mask"]
    assert torch.allclose(batch["canonical"][m], torch.from_numpy(bank).expand(int(m.sum()), -1, -1), atol=1e-3)


def test_bad_people_count_is_refused_by_the_datamodule():
    with pytest.raises(ValueError, match="max_people must be in 1..4, got 5"):
        DSynDataModule(max_people=5)


def test_preview_writes_a_png_and_summarises(tmp_path, capsys):
    out = tmp_path / "preview.png"
    write_dsyn_shards(tmp_path / "s", 6, samples_per_shard=6, generate_batch_size=6, progress=False)
    assert preview.main(["--out", str(out), "--scenes", "2", "--seed", "1", "--shards", str(tmp_path / "s")]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "6 scenes" in capsys.readouterr().out
