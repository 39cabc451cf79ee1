"""The seeded on-the-fly streams and their stateful loader: a loader restored from ``state_dict`` continues with exactly
the batches the original would have drawn, mid-epoch and across epochs, with or without workers."""

import pytest
import torch

from lightning_mp3d.datamodules.dsyn import DSynDataset
from lightning_mp3d.datamodules.streams import EpochDataLoader

SMALL = {"min_people": 1, "max_people": 2}


def _loader(num_workers: int = 0) -> EpochDataLoader:
    return EpochDataLoader(DSynDataset(2, 5, seed=3, scene_kwargs=SMALL), batch_size=None, num_workers=num_workers)


def _poses(batches) -> list[torch.Tensor]:
    return [b["poses"] for b in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_loader_continues_mid_epoch_and_into_the_next(workers):
    reference = _loader(workers)
    epoch0, epoch1 = _poses(reference), _poses(reference)
    assert not any(torch.equal(a, b) for a, b in zip(epoch0, epoch1))  # each iteration draws a new epoch

    killed = _loader(workers)
    it = iter(killed)
    seen = [next(it)["poses"] for _ in range(3)]
    state = killed.state_dict()
    assert state == {"epoch": 0, "position": 3}
    resumed = _loader(workers)
    resumed.load_state_dict(state)
    rest, after = _poses(resumed), _poses(resumed)
    for got, want in zip(seen + rest + after, epoch0 + epoch1, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_state_at_the_end_of_an_epoch_points_at_the_next_and_unfinished_epochs_are_left():
    loader = _loader()
    assert loader.state_dict() == {"epoch": 0, "position": 0}
    list(loader)
    assert loader.state_dict() == {"epoch": 1, "position": 0}
    it = iter(loader)
    next(it)  # epoch 1 left unfinished (a shorter partner loader, max_steps)
    assert loader.state_dict() == {"epoch": 1, "position": 1}
    next(iter(loader))
    assert loader.state_dict() == {"epoch": 2, "position": 1}  # the next iteration started a new epoch


def test_epoch_loader_refuses_streams_it_cannot_resume():
    with pytest.raises(TypeError, match="SeededBatchStream"):
        EpochDataLoader([{"x": 1}], batch_size=None)
