"""A stage's offline W&B run is complete when ``lightning fit`` returns: read back from its ``.wandb`` file (wandb's own
protobuf records), it holds the per-loss curves, the lr, the validation metrics and figures, a final summary, its
chain's group and an exit record, and its debug log shows no abandoned handles."""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path

from wandb.proto import wandb_internal_pb2

from lightning_mp3d.cli import cli_main
from tests.helpers import CONFIGS

BLOCK = 32 * 1024  # the .wandb log: a 7-byte file header, then 32 KiB blocks of (crc32c, length, type) + payload
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_offline_run(path: Path) -> dict[str, list]:
    """Records of a ``run-<id>.wandb`` file by type (``history``, ``summary``, ``exit``, ...); CRCs are not checked."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records: dict[str, list] = defaultdict(list)
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records[record.WhichOneof("record_type")].append(record)
    return records


def _items(updates) -> dict[str, object]:
    """History/summary items as {name: value}; a media item is {name: {"path": ..., "_type": ..., ...}}."""
    out: dict[str, object] = {}
    for u in updates:
        name, *field = list(u.nested_key) or [u.key]
        value = json.loads(u.value_json)
        if field:
            out.setdefault(name, {})["/".join(field)] = value
        else:
            out[name] = value
    return out


def test_offline_stage_run_is_finished_and_complete(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_RUN_GROUP", "chain-test")  # what mp3d-pipeline sets for one chain's stages
    args = [
        "fit",
        f"--config={CONFIGS / 'stage_aae.yaml'}",
        f"--config={CONFIGS / 'tiny' / 'stage_aae.yaml'}",
        *(f"--model.init_args.{k}.width=16" for k in ("encoder", "pose_decoder", "discriminator")),
        "--model.init_args.num_figure_poses=4",
        "--data.init_args.batch_size=8",
        "--data.init_args.batches_per_epoch=3",
        "--data.init_args.val_size=16",
        "--data.init_args.val_batch_size=16",
        "--trainer.max_steps=18",  # 2 epochs of 3 batches, 3 optimizer steps each
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        '--trainer.callbacks=[{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", '
        '"init_args": {"dirpath": "runs/aae/checkpoints", "save_last": true, "save_top_k": 0}}]',
    ]
    cli_main(args)
    run_dir = next((tmp_path / "runs" / "aae" / "wandb").glob("offline-run-*"))
    records = read_offline_run(next(run_dir.glob("run-*.wandb")))

    assert [r.exit.exit_code for r in records["exit"]] == [0]  # finished before cli_main returned
    assert records["run"][0].run.run_group == "chain-test"
    history = [_items(r.history.item) for r in records["history"]]
    logged = set().union(*history)
    assert {"train/loss_cyc", "train/loss_adv", "train/loss_disc", "train/lr"} <= logged  # one curve per loss, lr
    assert {"val/mpjpe_recon", "val/prior_plausible"} <= logged  # validation metrics
    figures = [h["val/prior_poses"] for h in history if "val/prior_poses" in h]
    assert len(figures) == 2 and all(f["_type"] == "image-file" for f in figures)  # one per validation
    assert all((run_dir / "files" / f["path"]).is_file() for f in figures)  # the media travel with the run
    summary: dict[str, object] = {}
    for record in records["summary"]:
        summary.update(_items(record.summary.update))
    assert summary["trainer/global_step"] > 0 and "val/mpjpe_recon" in summary and "train/loss_cyc" in summary
    log = (run_dir / "logs" / "debug.log").read_text()
    assert "HandleAbandonedError" not in log and "abandoning" not in log
