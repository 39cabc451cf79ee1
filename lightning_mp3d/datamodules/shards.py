"""Generic webdataset shards of tensor dicts: writer, reader and the per-sample encoding.

Encoding: one webdataset sample per example; every tensor entry ``name`` is stored as ``name.npy`` (NumPy's own
format: exact dtype, shape and bits), plus ``__key__`` = the example's global index as 9 digits. bfloat16 is not
representable in .npy and is refused. Writers go through a unique temporary file beside the shard
(``atomic.PendingFile``) and renamed when complete, so a shard path either holds a complete shard or does not exist,
and two writers never share a temporary file. Readers split shards explicitly by (rank, world_size) and then by
dataloader worker, and raise a ValueError naming the shard on a corrupt or truncated file.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import webdataset as wds
from tqdm.auto import tqdm

from lightning_mp3d.atomic import PendingFile

SHARD_PATTERN = "{prefix}-{index:06d}.tar"


def encode_sample(key: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """One example -> a webdataset sample dict: ``{"__key__": key, "<name>.npy": bytes}``."""
    sample: dict[str, object] = {"__key__": key}
    for name, value in tensors.items():
        if "." in name or name.startswith("__"):
            raise ValueError(f"tensor key {name!r} must not contain '.' or start with '__'")
        if value.dtype == torch.bfloat16:
            raise ValueError(f"tensor {name!r} is bfloat16, which .npy cannot store; convert it first")
        buffer = io.BytesIO()
        np.save(buffer, value.detach().cpu().numpy(), allow_pickle=False)
        sample[f"{name}.npy"] = buffer.getvalue()
    return sample


def decode_sample(sample: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """A webdataset sample dict (raw bytes) -> ``{name: tensor}``; ``__key__``/``__url__`` are dropped."""
    out: dict[str, torch.Tensor] = {}
    for field, value in sample.items():
        if field.startswith("__"):
            continue
        name, _, ext = field.rpartition(".")
        if ext != "npy":
            raise ValueError(f"unexpected entry {field!r} in sample {sample.get('__key__')} of {sample.get('__url__')}")
        try:
            array = np.load(io.BytesIO(value), allow_pickle=False)
        except Exception as exn:  # noqa: BLE001 - re-raised with the shard named
            raise ValueError(
                f"corrupt entry {field!r} in sample {sample.get('__key__')} of shard {sample.get('__url__')}: {exn}"
            ) from exn
        out[name] = torch.from_numpy(array)
    return out


def write_tensor_shards(
    out_dir: str | os.PathLike,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    samples_per_shard: int,
    prefix: str = "shard",
    total: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Write batches of examples (dicts of tensors sharing the leading dim) as webdataset shards.

    Args:
        out_dir: folder, created if missing.
        batches: iterable of ``{name: (N, ...) tensor}``; examples are split along dim 0.
        samples_per_shard: examples per shard (the last shard may hold fewer).
        prefix: shard file names are ``<prefix>-000000.tar``, ...
        total: number of examples for the progress bar (optional).
        progress: show a tqdm progress bar.

    Returns:
        The shard paths written, in order.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    os.makedirs(out_dir, exist_ok=True)
    paths: list[str] = []
    writer: wds.TarWriter | None = None
    pending: PendingFile | None = None
    in_shard = 0
    index = 0

    def close() -> None:
        nonlocal writer, pending
        if writer is not None:
            writer.close()
            pending.commit()
            writer, pending = None, None

    bar = tqdm(total=total, unit="sample", desc=f"writing {prefix} shards", disable=not progress)
    try:
        for batch in batches:
            sizes = {name: t.shape[0] for name, t in batch.items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"all tensors of a batch must share the leading dim, got {sizes}")
            n = next(iter(sizes.values()))
            for i in range(n):  # per-example tar members: the loop is over examples, not pixels
                if writer is None:
                    paths.append(
                        os.path.join(os.fspath(out_dir), SHARD_PATTERN.format(prefix=prefix, index=len(paths)))
                    )
                    pending = PendingFile(paths[-1])
                    writer = wds.TarWriter(pending.handle)
                    in_shard = 0
                writer.write(encode_sample(f"{index:09d}", {name: t[i] for name, t in batch.items()}))
                index += 1
                in_shard += 1
                if in_shard == samples_per_shard:
                    close()
            bar.update(n)
        close()
    finally:
        bar.close()
        if writer is not None:  # an exception left a partial shard: remove it
            writer.close()
            pending.discard()
    return paths


class AtomicShardWriter(wds.ShardWriter):
    """``wds.ShardWriter`` whose shards appear only complete.

    Each shard is written to a unique temporary file beside it and renamed when it is closed; when the ``with`` block
    ends in an exception the partial shard is removed instead.
    """

    def __init__(self, pattern: str, **kwargs: object) -> None:
        self._pending: dict[str, PendingFile] = {}
        super().__init__(pattern, opener=self._open, post=self._commit, **kwargs)

    def _open(self, fname: str) -> io.BufferedWriter:
        self._pending[fname] = PendingFile(fname)
        return self._pending[fname].handle

    def _commit(self, fname: str) -> None:
        self._pending.pop(fname).commit()

    def __exit__(self, exc_type, *args: object) -> None:
        if exc_type is not None and self.tarstream is not None:
            self._pending.pop(self.fname).discard()
            self.tarstream = None
        super().__exit__(exc_type, *args)


def expand_shards(shards: str | Sequence[str]) -> list[str]:
    """Shard paths from a list, a glob (``dir/*.tar``), a folder, or webdataset brace notation; ValueError if none."""
    if isinstance(shards, (list, tuple)):
        urls = [os.fspath(s) for s in shards]
    elif os.path.isdir(shards):
        urls = sorted(glob.glob(os.path.join(shards, "*.tar")))
    elif any(ch in shards for ch in "*?["):
        urls = sorted(glob.glob(shards))
    else:
        urls = list(wds.shardlists.expand_urls(shards))
    if not urls:
        raise ValueError(f"no shards found for {shards!r}")
    missing = [u for u in urls if "://" not in u and not os.path.exists(u)]
    if missing:
        raise ValueError(f"shard file(s) not found: {', '.join(missing[:5])}")
    return urls


def _raise_corrupt(exn: Exception) -> bool:
    where = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), None)
    raise ValueError(f"corrupt or unreadable shard {where or '(unknown)'}: {exn.args[0] if exn.args else exn}") from exn


def _decode_all(keys: Sequence[str] | None) -> Callable[[Iterable[dict]], Iterator[dict[str, torch.Tensor]]]:
    def decode(src: Iterable[dict]) -> Iterator[dict[str, torch.Tensor]]:
        expected = None if keys is None else set(keys)
        for sample in src:  # not wds.map, which would put __key__ back into the tensor dict
            tensors = decode_sample(sample)
            if expected is None:
                expected = set(tensors)
            if set(tensors) != expected:  # a streaming tar reader ends a truncated file without an error
                raise ValueError(
                    f"corrupt or truncated shard {sample.get('__url__')}: sample {sample.get('__key__')} has keys "
                    f"{sorted(tensors)}, expected {sorted(expected)}"
                )
            yield tensors

    return decode


def _split_by_rank(rank: int, world_size: int) -> Callable[[Iterable[dict]], Iterator[dict]]:
    def split(src: Iterable[dict]) -> Iterator[dict]:
        for i, item in enumerate(src):
            if i % world_size == rank:
                yield item

    return split


def tensor_shard_pipeline(
    shards: str | Sequence[str],
    *,
    rank: int = 0,
    world_size: int = 1,
    shardshuffle: bool = False,
    shuffle_buffer: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
    partial: bool = True,
    keys: Sequence[str] | None = None,
) -> wds.DataPipeline:
    """A webdataset pipeline yielding ``{name: tensor}`` examples (or stacked batches) from tensor shards.

    Args:
        shards: see ``expand_shards``.
        rank: this node's rank r in an explicit node split: it reads shards r, r + W, ... (then split by dataloader
            worker).
        world_size: W, the number of nodes sharing the shards.
        shardshuffle: shuffle the shard order (seeded by ``seed``).
        shuffle_buffer: >0 shuffles examples within a buffer of this size.
        seed: seed of the shard order and example shuffles.
        batch_size: stack this many examples into a batch (dim 0 added); None yields single examples.
        partial: keep a last incomplete batch.
        keys: tensor names every sample must hold (None: those of the first sample read); a sample with other
            names (e.g. cut short by a truncated shard) raises a ValueError naming the shard.

    Returns:
        An iterable ``wds.DataPipeline``; use with ``DataLoader(pipeline, batch_size=None)`` when batched.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    urls = expand_shards(shards)
    if len(urls) < world_size:
        raise ValueError(f"{len(urls)} shard(s) cannot be split over world_size={world_size} ranks; write more shards")
    stages: list = [wds.SimpleShardList(urls)]
    if shardshuffle:  # same order on every rank and worker (seed + epoch counter), so the splits stay disjoint
        stages.append(wds.detshuffle(len(urls), initial=len(urls), seed=seed))
    stages += [_split_by_rank(rank, world_size), wds.split_by_worker, wds.tarfile_to_samples(handler=_raise_corrupt)]
    if shuffle_buffer > 0:
        stages.append(wds.shuffle(shuffle_buffer, seed=seed))
    stages.append(_decode_all(keys))
    if batch_size is not None:
        stages.append(wds.batched(batch_size, collation_fn=stack_examples, partial=partial))
    return wds.DataPipeline(*stages)


def stack_examples(examples: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of ``{name: tensor}`` examples into one batch dict."""
    return {name: torch.stack([e[name] for e in examples]) for name in examples[0]}
