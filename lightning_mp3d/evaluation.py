"""Evaluation protocol runner: predictor + GT dataloader -> every metric -> Table 3/4/5/6/7-style Markdown and JSON.

``predictor(images (B, 3, 224, 224)) -> (pred_poses (B, P, 15, 3) mm in the model's 224-px input camera, pred_2d
(B, P, 15, 2) px in the 224 input, pred_mask (B, P) bool[, confidence (B, P)])``; without a confidence every
predicted person scores 1 for AP_root. Batches are dicts as produced by ``MuPoTSDataset`` / ``H36MDataset`` (or the
embedded target-domain test set with the same keys): ``image``, ``gt_poses`` (annot3), optional ``gt_poses_univ``,
``gt_2d`` with optional ``letterbox`` (``imageio.Letterbox``; then ``gt_2d`` is full-resolution px and predictions
are mapped back with its ``to_original`` before matching, so the official 40 px box applies), ``gt_mask``,
``sequence``.

Real camera: when a batch carries ``intrinsics`` (B, 4) = (fx, fy, cx, cy) of the original frames (MuPoTS-3D), the
predicted people are first re-expressed in that camera with ``geometry.camera.to_real_camera`` (root pixel mapped to
the original image and back-projected through the real intrinsics at depth ``Z * s * sqrt(fx fy) / 224``, the
root-relative pose kept), so absolute metrics compare like with like: the GT ``annot3`` lives in the real camera,
the model's output in its f = 224 px input camera. Root-relative metrics are unchanged by this step.

Which GT feeds which metric: each metric's ``gt_variant`` (``"univ_annot3"`` -> ``gt_poses_univ`` when the batch
has it, ``"annot3"`` -> ``gt_poses``); the official (bone-rescaling) 3DPCK reads ``univ_annot3``, every other metric
``annot3``:
- 3DPCK_rel (official, Table 3/4): ``gt_poses_univ``, relative, bone rescaling, 150 mm.
- 3DPCK_rel plain: ``gt_poses``, relative, no rescaling, 150 mm.
- 3DPCK_abs (Table 5): ``gt_poses``, absolute, no rescaling, 250 mm (paper / RootNet); and 150 mm (official script's
  absolute mode, which also rescales bones: ``gt_poses_univ``).
- AP_root (25 cm, RootNet) and absolute MPJPE (no root alignment): ``gt_poses``.
- MPJPE / PA-MPJPE (Table 6 style), 2D PCK at 25 px, 2D-MPJPE, box IoU (Table 7): ``gt_poses`` / ``gt_2d``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch

from lightning_mp3d.atomic import write_text_atomic
from lightning_mp3d.geometry.camera import Intrinsics, to_real_camera
from lightning_mp3d.imageio import Letterbox
from lightning_mp3d.metrics import (
    MPJPE,
    OFFICIAL_MATCHING,
    PAMPJPE,
    PCK2D,
    PCK3D,
    PCK3D_ABS_THRESHOLD_MM,
    APRoot,
    BoxIoU,
    MatchSpec,
    PeopleBatch,
    RootsBatch,
)
from lightning_mp3d.skeleton import JOINT_GROUPS, ROOT

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

Predictor = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


class EvaluationResult(NamedTuple):
    """Every metric's result NamedTuple plus the sequence names."""

    pck3d_rel: object
    pck3d_rel_plain: object
    pck3d_abs_250: object
    pck3d_abs_150: object
    mpjpe: object
    pa_mpjpe: object
    pck2d: object
    box_iou: object
    mpjpe_abs: object
    ap_root: torch.Tensor
    sequence_names: list[str]


def build_metrics(num_sequences: int, match: MatchSpec) -> dict[str, torch.nn.Module]:
    """One fresh metric instance per entry of EvaluationResult."""
    kw = {"num_sequences": num_sequences, "match": match}
    return {
        "pck3d_rel": PCK3D(protocol="official", **kw),
        "pck3d_rel_plain": PCK3D(protocol="plain", **kw),
        "pck3d_abs_250": PCK3D(threshold=PCK3D_ABS_THRESHOLD_MM, mode="absolute", protocol="plain", **kw),
        "pck3d_abs_150": PCK3D(mode="absolute", protocol="official", **kw),
        "mpjpe": MPJPE(**kw),
        "pa_mpjpe": PAMPJPE(**kw),
        "pck2d": PCK2D(**kw),
        "box_iou": BoxIoU(**kw),
        "mpjpe_abs": MPJPE(root_align=False, **kw),
    }


@torch.no_grad()
def evaluate(
    predictor: Predictor,
    batches: Iterable[dict[str, torch.Tensor]],
    num_sequences: int = 20,
    sequence_names: list[str] | None = None,
    match: MatchSpec = OFFICIAL_MATCHING,
) -> EvaluationResult:
    """Run ``predictor`` over ``batches`` and compute every metric.

    Args:
        predictor: images -> (pred_poses in the input camera, pred_2d in input px, pred_mask[, confidence]).
        batches: GT batches (see the module docstring).
        num_sequences: per-sequence breakdown size (20 for MuPoTS-3D, the number of actions for Human3.6M).
        sequence_names: names for the tables (default TS1..TSn).
        match: the official 2D matching at 40 px on full-resolution GT (default),
            ``MatchSpec(threshold_px=MATCH_THRESHOLD_PX_224)`` when GT 2D is in input px, ``MatchSpec("index")``
            for already paired people (Human3.6M).
    """
    metrics = build_metrics(num_sequences, match)
    ap = APRoot()
    for batch in batches:
        pred_poses, pred_2d, pred_mask, *rest = predictor(batch["image"])
        confidence = rest[0] if rest else pred_mask.to(pred_poses.dtype)
        if "intrinsics" in batch:  # the model's input camera -> the real camera of the GT
            virtual = Intrinsics.for_image(batch["image"].shape[-1])
            letterbox, intrinsics = batch["letterbox"].to(pred_poses), batch["intrinsics"].to(pred_poses)
            pred_poses = to_real_camera(pred_poses, letterbox, intrinsics, virtual)
        if "letterbox" in batch:  # predictions to the GT's full-resolution pixels
            pred_2d = Letterbox.from_tensor(batch["letterbox"].to(pred_2d)).to_original(pred_2d)
        gt, gt_2d, gt_mask, seq = batch["gt_poses"], batch["gt_2d"], batch["gt_mask"], batch.get("sequence")
        ap.update(RootsBatch(pred_poses[..., ROOT, :], confidence, pred_mask, gt[..., ROOT, :], gt_mask))
        gt_variants = {"annot3": gt, "univ_annot3": batch.get("gt_poses_univ", gt)}
        for metric in metrics.values():
            metric.update(
                PeopleBatch(pred_poses, pred_2d, pred_mask, gt_variants[metric.gt_variant], gt_2d, gt_mask, seq)
            )
    names = sequence_names or [f"TS{i + 1}" for i in range(num_sequences)]
    return EvaluationResult(**{k: m.compute() for k, m in metrics.items()}, ap_root=ap.compute(), sequence_names=names)


def _num(x: torch.Tensor | float, scale: float = 100.0) -> float | None:
    v = float(x)
    return None if math.isnan(v) else round(v * scale, 2)


def _cell(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def result_to_json(r: EvaluationResult) -> dict:
    """Plain-number dict (percentages for PCK/IoU, millimetres / pixels for errors).

    Per-sequence tensors are flattened first: torchmetrics squeezes one-element results (one sequence) to 0-d.
    """

    def pck(p) -> dict:
        return {
            "all": _num(p.pck_all),
            "matched": _num(p.pck_matched),
            "auc_all": _num(p.auc_all),
            "auc_matched": _num(p.auc_matched),
            "per_sequence_all": dict(zip(r.sequence_names, (_num(v) for v in p.per_sequence_all.reshape(-1)))),
            "per_sequence_matched": dict(zip(r.sequence_names, (_num(v) for v in p.per_sequence_matched.reshape(-1)))),
            "per_group_all": {k: _num(v) for k, v in p.per_group_all.items()},
            "per_group_matched": {k: _num(v) for k, v in p.per_group_matched.items()},
            "detection_rate": _num(p.detection_rate),
        }

    def err(e) -> dict:
        return {
            "mean": _num(e.mpjpe, 1.0),
            "mean_over_sequences": _num(e.mean_over_sequences, 1.0),
            "per_sequence": dict(zip(r.sequence_names, (_num(v, 1.0) for v in e.per_sequence.reshape(-1)))),
        }

    return {
        "pck3d_rel": pck(r.pck3d_rel),
        "pck3d_rel_plain": pck(r.pck3d_rel_plain),
        "pck3d_abs_250": pck(r.pck3d_abs_250),
        "pck3d_abs_150": pck(r.pck3d_abs_150),
        "mpjpe_mm": err(r.mpjpe),
        "pa_mpjpe_mm": err(r.pa_mpjpe),
        "pck2d": {
            "all": _num(r.pck2d.pck_all),
            "matched": _num(r.pck2d.pck_matched),
            "mpjpe_2d_px": _num(r.pck2d.mpjpe_2d, 1.0),
        },
        "box_iou": {"matched": _num(r.box_iou.iou_matched), "all": _num(r.box_iou.iou_all)},
        "mpjpe_abs_mm": err(r.mpjpe_abs),
        "ap_root_25cm": _num(r.ap_root),
    }


def result_to_markdown(r: EvaluationResult, title: str = "Evaluation") -> str:
    """Table 3 (per sequence), Table 4 (per joint group), Table 5 (absolute), Table 6-style errors, Table 7 (2D)."""
    d = result_to_json(r)
    rel = d["pck3d_rel"]
    names = [n for n in r.sequence_names if rel["per_sequence_all"].get(n) is not None]
    lines = [f"# {title}", "", "## 3DPCK_rel per sequence (official protocol, 150 mm; Table 3)", ""]
    lines += ["| | " + " | ".join(names) + " | Avg |", "|---" * (len(names) + 2) + "|"]
    for mode in ("all", "matched"):
        row = [_cell(rel[f"per_sequence_{mode}"][n]) for n in names]
        lines.append(f"| {mode} | " + " | ".join(row) + f" | {_cell(rel[mode])} |")
    groups = [g for g in JOINT_GROUPS if g in rel["per_group_all"]]
    lines += ["", "## 3DPCK_rel per joint group (Table 4)", "", "| | " + " | ".join(groups) + " | Total |"]
    lines.append("|---" * (len(groups) + 2) + "|")
    for mode in ("all", "matched"):
        lines.append(
            f"| {mode} | " + " | ".join(_cell(rel[f"per_group_{mode}"][g]) for g in groups) + f" | {_cell(rel[mode])} |"
        )
    lines += ["", "## Summary (Tables 5-7)", "", "| metric | all | matched |", "|---|---|---|"]
    for key, label in (
        ("pck3d_rel", "3DPCK_rel official (150 mm)"),
        ("pck3d_rel_plain", "3DPCK_rel plain, annot3 (150 mm)"),
        ("pck3d_abs_250", "3DPCK_abs 250 mm (paper)"),
        ("pck3d_abs_150", "3DPCK_abs 150 mm (official script)"),
    ):
        lines.append(f"| {label} | {_cell(d[key]['all'])} | {_cell(d[key]['matched'])} |")
        lines.append(f"| AUC {label} | {_cell(d[key]['auc_all'])} | {_cell(d[key]['auc_matched'])} |")
    lines.append(f"| 2D-PCK (25 px) | {_cell(d['pck2d']['all'])} | {_cell(d['pck2d']['matched'])} |")
    lines.append(f"| box IoU | {_cell(d['box_iou']['all'])} | {_cell(d['box_iou']['matched'])} |")
    lines.append(f"| AP_root (25 cm) | {_cell(d['ap_root_25cm'])} | |")
    lines += ["", "| error (matched people) | value |", "|---|---|"]
    lines.append(f"| MPJPE, root aligned (mm) | {_cell(d['mpjpe_mm']['mean'])} |")
    lines.append(f"| MPJPE mean over sequences/actions (mm) | {_cell(d['mpjpe_mm']['mean_over_sequences'])} |")
    lines.append(f"| MPJPE, absolute (camera frame, mm) | {_cell(d['mpjpe_abs_mm']['mean'])} |")
    lines.append(f"| PA-MPJPE (mm) | {_cell(d['pa_mpjpe_mm']['mean'])} |")
    lines.append(f"| 2D-MPJPE (px) | {_cell(d['pck2d']['mpjpe_2d_px'])} |")
    return "\n".join(lines) + "\n"


def write_results(r: EvaluationResult, out_dir: str | Path, title: str = "Evaluation") -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    md = write_text_atomic(out / "results.md", result_to_markdown(r, title))
    js = write_text_atomic(out / "results.json", json.dumps(result_to_json(r), indent=2))
    return md, js


def build_parser() -> ArgumentParser:
    """The ``mp3d-evaluate`` parser (jsonargparse: ``--config`` files and ``--print_config``, argparse's flags)."""
    from lightning_mp3d.commands import command_parser

    parser = command_parser("mp3d-evaluate", main.__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=str, required=True, help="distill/phase1/phase2 checkpoint")
    parser.add_argument("--dataset", type=Literal["mupots", "h36m", "3dpw", "embedded"], required=True)
    parser.add_argument(
        "--root", type=str | None, help="MuPoTS-3D folder with TS1..TS20, the Human3.6M .npz, or the 3DPW folder"
    )
    parser.add_argument("--split", type=str, default="test", help="3DPW split (test: the paper's All-Test-mode)")
    parser.add_argument(
        "--intrinsics", type=str | None, help="MuPoTS-3D per-sequence intrinsics JSON (default: fitted)"
    )
    parser.add_argument("--num-images", type=int, default=256, help="embedded: size of the target test set")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=str, default="results/eval")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``mp3d-evaluate``: a trained checkpoint chain on MuPoTS-3D, Human3.6M arrays or the embedded target test set.

    Examples::

        mp3d-evaluate --checkpoint runs/phase2/checkpoints/last.ckpt --dataset mupots --root MultiPersonTestSet
        mp3d-evaluate --checkpoint runs/phase2/checkpoints/last.ckpt --dataset h36m --root h36m_eval.npz
        mp3d-evaluate --checkpoint runs/phase2/checkpoints/last.ckpt --dataset 3dpw --root 3DPW
        mp3d-evaluate --checkpoint runs/phase2/checkpoints/last.ckpt --dataset embedded
    """
    from torch.utils.data import DataLoader

    from lightning_mp3d.inference import PoseEstimator
    from lightning_mp3d.metrics import MATCH_THRESHOLD_PX_224

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset != "embedded" and not args.root:
        parser.error(f"--root is required for --dataset {args.dataset}")

    estimator = PoseEstimator.from_stage_checkpoint(args.checkpoint)

    def predictor(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = estimator(images)
        return out.poses, out.keypoints, out.mask, out.confidence

    if args.dataset == "mupots":
        from lightning_mp3d.datamodules.mupots import MuPoTSDataset

        dataset = MuPoTSDataset(args.root, intrinsics_json=args.intrinsics)
        result = evaluate(predictor, DataLoader(dataset, batch_size=args.batch_size), num_sequences=20)
        title = "MuPoTS-3D"
    elif args.dataset == "h36m":
        from lightning_mp3d.datamodules.h36m import H36MDataset

        dataset = H36MDataset(args.root)
        names = dataset.arrays.action_names
        result = evaluate(
            predictor,
            DataLoader(dataset, batch_size=args.batch_size),
            num_sequences=len(names),
            sequence_names=names,
            match=MatchSpec("index"),
        )
        title = "Human3.6M (S9, S11)"
    elif args.dataset == "3dpw":
        from lightning_mp3d.datamodules.threedpw import ThreeDPWDataset

        dataset = ThreeDPWDataset(args.root, split=args.split)
        names = dataset.sequence_names
        loader = DataLoader(dataset, batch_size=args.batch_size)
        result = evaluate(predictor, loader, num_sequences=len(names), sequence_names=names)
        title = f"3DPW ({args.split})"
    else:
        from lightning_mp3d.synth.batches import target_test_set

        batches = target_test_set(args.num_images, args.batch_size)
        result = evaluate(
            predictor,
            batches,
            num_sequences=1,
            sequence_names=["target"],
            match=MatchSpec(threshold_px=MATCH_THRESHOLD_PX_224),
        )
        title = "Embedded target domain"
    md, js = write_results(result, args.out, title)
    print(md.read_text())
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
