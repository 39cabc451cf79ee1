"""Run by ``torchrun --nproc_per_node=2`` from tests/test_metrics_ddp.py: every metric on an uneven split (gloo, CPU).

Rank 0 gets frames [0, 3), rank 1 frames [3, 11). Each rank updates its metrics with its shard; ``compute()`` syncs
the states over both ranks. The single-process reference is computed on every frame with ``sync_on_compute=False``.
Rank 0 writes ``{name: [ddp_values, reference_values]}`` to the JSON path given as argv[1].
"""

import json
import sys

import torch
import torch.distributed as dist

from lightning_mp3d import metrics as M
from tests.helpers import random_people_batch


def _flat(result) -> list[float]:
    if torch.is_tensor(result):
        return result.flatten().tolist()
    out = []
    for v in result:
        if isinstance(v, dict):
            for k in sorted(v):
                out += v[k].flatten().tolist()
        else:
            out += v.flatten().tolist()
    return out


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = random_people_batch(7, b=11)
    shard = slice(0, 3) if rank == 0 else slice(3, 11)
    mine = [x[shard] for x in data]
    kinds = {
        "pck3d": lambda **kw: M.PCK3D(num_sequences=3, **kw),
        "pck3d_abs": lambda **kw: M.PCK3D(num_sequences=3, mode="absolute", threshold=250.0, protocol="plain", **kw),
        "mpjpe": lambda **kw: M.MPJPE(num_sequences=3, **kw),
        "pa_mpjpe": lambda **kw: M.PAMPJPE(num_sequences=3, **kw),
        "pck2d": lambda **kw: M.PCK2D(num_sequences=3, **kw),
        "box_iou": lambda **kw: M.BoxIoU(num_sequences=3, **kw),
    }
    results = {}
    for name, make in kinds.items():
        ddp, ref = make(), make(sync_on_compute=False)
        ddp.update(M.PeopleBatch(*mine))
        ref.update(M.PeopleBatch(*data))
        results[name] = [_flat(ddp.compute()), _flat(ref.compute())]
    # AP_root: cat states of different lengths per rank
    pred, _, pred_mask, gt, _, gt_mask, _ = data
    scores = torch.linspace(1.0, 0.0, pred.shape[0] * pred.shape[1]).view(pred.shape[:2])
    ddp, ref = M.APRoot(), M.APRoot(sync_on_compute=False)
    ddp.update(M.RootsBatch(pred[shard][:, :, 0], scores[shard], pred_mask[shard], gt[shard][:, :, 0], gt_mask[shard]))
    ref.update(M.RootsBatch(pred[:, :, 0], scores, pred_mask, gt[:, :, 0], gt_mask))
    results["ap_root"] = [_flat(ddp.compute()), _flat(ref.compute())]
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
