"""The target-domain results table of a trained chain: teacher vs student 2D (Table 7 analog), 3D per stage.

``evaluate_chain(runs, results)`` evaluates every student stage found in ``runs/`` (distill, phase1, phase2) and the
teacher on one fixed, held-out set of rendered target-domain images with GT (its seed is used nowhere in training or
validation) and writes ``results/results.md``, ``results/results.json`` and ``results/*.png``.

Protocol on 224-pixel synthetic images: people in these images cover the same fraction of the frame as in MuPoTS-3D's
2048-pixel frames (f = W, 3-8 m), so the official pixel thresholds are scaled by 224/2048: the person-matching box is
40 px -> 4.375 px and the 2D-PCK threshold 25 px -> 2.73 px ("scaled official"). These are a third of a
teacher-map cell, finer than what the coarse tiny models resolve, so a second "grid scale" table matches people
within one output cell (16 px) and scores 2D joints within one teacher-map cell (8 px). 3D thresholds are unchanged
(150 mm relative with
the official bone rescaling against the GT's own bones, 250 mm absolute). The rows are the stages the chain ran, which
are the paper's Table 2 ablation rows: distill = L_distl only; phase1 = + L_recon + L_adapt; phase2 = + L_ss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch

from lightning_mp3d.atomic import save_figure_atomic, write_text_atomic
from lightning_mp3d.metrics import PCK2D, BoxIoU
from lightning_mp3d.metrics.functional import MATCH_THRESHOLD_PX_224, PCK2D_THRESHOLD_PX

TEST_SEED = 20_200_823  # ECCV 2020's first day; used only here


class Protocol(NamedTuple):
    """Pixel thresholds of one evaluation protocol on 224-px images."""

    name: str
    match_px: float  # person-matching box half-size
    pck2d_px: float  # 2D-PCK radius


PROTOCOLS = (
    Protocol("scaled official", MATCH_THRESHOLD_PX_224, PCK2D_THRESHOLD_PX * 224.0 / 2048.0),
    Protocol("grid scale", 16.0, 8.0),
)
STUDENT_STAGES = ("distill", "phase1", "phase2")
ROW_NAMES = {
    "teacher": "Teacher (stage 0, 2D only)",
    "distill": "L_distl only (distill)",
    "phase1_recon": "+ L_recon (phase1 without L_adapt)",
    "phase1": "+ L_recon + L_adapt (phase1)",
    "phase2": "+ L_ss (phase2)",
}


def target_test_set(
    num_images: int = 128, batch_size: int = 16, seed: int = TEST_SEED
) -> list[dict[str, torch.Tensor]]:
    """Fixed target-domain images with GT, as evaluation batches (``image``, ``gt_poses``, ``gt_2d``, ``gt_mask``)."""
    from lightning_mp3d.synth.render import synthetic_batch

    generator = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, num_images, batch_size):
        b = synthetic_batch(min(batch_size, num_images - start), "target", generator)
        n = b["image"].shape[0]
        batches.append(
            {
                "image": b["image"],
                "gt_poses": b["poses"],
                "gt_2d": b["joints_2d"],
                "gt_mask": b["mask"],
                "sequence": torch.zeros(n, dtype=torch.long),
            }
        )
    return batches


@torch.no_grad()
def teacher_2d(
    teacher: torch.nn.Module, batches: list[dict[str, torch.Tensor]], protocol: Protocol
) -> dict[str, float]:
    """2D-PCK, 2D-MPJPE and box IoU of the teacher's grouped people."""
    kw = {"num_sequences": 1, "match_threshold_px": protocol.match_px}
    pck, iou = PCK2D(threshold_px=protocol.pck2d_px, **kw), BoxIoU(**kw)
    for b in batches:
        people = teacher.grouped(b["image"])
        dummy = torch.zeros(people.keypoints.shape[:-1] + (3,))
        for metric in (pck, iou):
            metric.update(dummy, people.keypoints, people.mask, b["gt_poses"], b["gt_2d"], b["gt_mask"], b["sequence"])
    p, i = pck.compute(), iou.compute()
    return {"pck2d": 100 * float(p.pck_all), "mpjpe_2d": float(p.mpjpe_2d), "box_iou": 100 * float(i.iou_all)}


@torch.no_grad()
def student_metrics(predictions: list, batches: list[dict[str, torch.Tensor]], protocol: Protocol) -> dict[str, float]:
    """3D and 2D metrics of a PoseEstimator's ``predictions`` (one Prediction per batch) on the test batches."""
    from lightning_mp3d.evaluation import evaluate

    by_batch = {id(b["image"]): out for b, out in zip(batches, predictions, strict=True)}

    def predictor(images: torch.Tensor):
        out = by_batch[id(images)]
        return out.poses, out.keypoints, out.mask

    r = evaluate(predictor, batches, num_sequences=1, sequence_names=["target"], match_threshold_px=protocol.match_px)
    pck2d = PCK2D(threshold_px=protocol.pck2d_px, num_sequences=1, match_threshold_px=protocol.match_px)
    for b, out in zip(batches, predictions, strict=True):
        pck2d.update(out.poses, out.keypoints, out.mask, b["gt_poses"], b["gt_2d"], b["gt_mask"], b["sequence"])
    p2 = pck2d.compute()
    return {
        "pck3d_rel": 100 * float(r.pck3d_rel.pck_all),
        "pck3d_rel_matched": 100 * float(r.pck3d_rel.pck_matched),
        "pck3d_abs_250": 100 * float(r.pck3d_abs_250.pck_all),
        "mpjpe": float(r.mpjpe.mpjpe),
        "pa_mpjpe": float(r.pa_mpjpe.mpjpe),
        "pck2d": 100 * float(p2.pck_all),
        "mpjpe_2d": float(p2.mpjpe_2d),
        "box_iou": 100 * float(r.box_iou.iou_all),
    }


def _markdown(tables: dict[str, dict[str, dict[str, float]]], num_images: int, preset: str) -> str:
    def f(v: float | None) -> str:
        return "–" if v is None or v != v else f"{v:.1f}"

    lines = [f"# Target-domain results ({preset} preset, {num_images} held-out rendered images)", ""]
    for protocol in PROTOCOLS:
        lines += [
            f"## {protocol.name}: person matching box {protocol.match_px:g} px, 2D-PCK {protocol.pck2d_px:.2f} px",
            "",
            "3DPCK_rel: 150 mm, official protocol (bone rescaling), over all GT people; 3DPCK_abs: 250 mm;",
            "MPJPE / PA-MPJPE: root-aligned / Procrustes, matched people.",
            "",
            "| row | 3DPCK_rel ↑ | 3DPCK_rel matched ↑ | 3DPCK_abs ↑ | MPJPE mm ↓ | PA-MPJPE mm ↓ | 2D-PCK ↑ "
            "| 2D-MPJPE px ↓ | box IoU ↑ |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in tables[protocol.name].items():
            lines.append(
                f"| {ROW_NAMES.get(name, name)} | {f(m.get('pck3d_rel'))} | {f(m.get('pck3d_rel_matched'))} | "
                f"{f(m.get('pck3d_abs_250'))} | {f(m.get('mpjpe'))} | {f(m.get('pa_mpjpe'))} | {f(m.get('pck2d'))} | "
                f"{f(m.get('mpjpe_2d'))} | {f(m.get('box_iou'))} |"
            )
        lines.append("")
    return "\n".join(lines)


def _plot_rows(rows: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in rows if n != "teacher"]
    keys = ("pck3d_rel", "pck3d_abs_250", "pck2d")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        ax.bar([i + k * width for i in range(len(names))], [rows[n].get(key, 0.0) for n in names], width, label=key)
    if "teacher" in rows:
        ax.axhline(rows["teacher"]["pck2d"], color="k", ls="--", lw=1, label="teacher pck2d")
    ax.set_xticks([i + width for i in range(len(names))], [ROW_NAMES[n] for n in names], fontsize=7)
    ax.set_ylabel("%")
    ax.set_title(f"target domain, {title} thresholds", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def _plot_examples(estimator: torch.nn.Module, batch: dict[str, torch.Tensor], path: Path, count: int = 4) -> None:
    from lightning_mp3d.visualize import plt, prediction_figure

    out = estimator(batch["image"][:count])
    fig = prediction_figure(batch["image"][:count], out, gt_2d=batch["gt_2d"][:count], gt_mask=batch["gt_mask"][:count])
    save_figure_atomic(fig, path, dpi=90)
    plt.close(fig)


def evaluate_chain(
    runs: Path, results: Path, preset: str = "tiny", num_images: int = 128, extra_rows: dict[str, Path] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate the teacher and every trained student stage under ``runs``; write the tables to ``results``.

    ``extra_rows`` adds ablation checkpoints (row name -> student checkpoint), placed before the stage they vary.
    Returns ``{protocol name: {row: {metric: value}}}``.
    """
    from lightning_mp3d.inference import PoseEstimator
    from lightning_mp3d.models.teacher import load_teacher

    results.mkdir(parents=True, exist_ok=True)
    batches = target_test_set(num_images)
    tables: dict[str, dict[str, dict[str, float]]] = {p.name: {} for p in PROTOCOLS}
    teacher_ckpt = runs / "teacher" / "checkpoints" / "last.ckpt"
    if teacher_ckpt.is_file():
        teacher = load_teacher(teacher_ckpt)
        for protocol in PROTOCOLS:
            tables[protocol.name]["teacher"] = teacher_2d(teacher, batches, protocol)
    last_estimator = None
    rows = {stage: runs / stage / "checkpoints" / "last.ckpt" for stage in STUDENT_STAGES}
    for name, path in (extra_rows or {}).items():  # e.g. phase1_recon goes just before phase1
        order = list(rows)
        at = order.index(name.split("_")[0]) if name.split("_")[0] in order else len(order)
        rows = dict([*list(rows.items())[:at], (name, Path(path)), *list(rows.items())[at:]])
    for stage, ckpt in rows.items():
        if ckpt.is_file():
            last_estimator = PoseEstimator.from_stage_checkpoint(ckpt)
            with torch.no_grad():
                predictions = [last_estimator(b["image"]) for b in batches]
            for protocol in PROTOCOLS:
                tables[protocol.name][stage] = student_metrics(predictions, batches, protocol)
    if not any(tables.values()):
        raise FileNotFoundError(f"no trained stage under {runs}/<stage>/checkpoints/last.ckpt")
    md = _markdown(tables, num_images, preset)
    write_text_atomic(results / "results.md", md)
    record = {"preset": preset, "num_images": num_images, "protocols": [p._asdict() for p in PROTOCOLS]}
    write_text_atomic(results / "results.json", json.dumps({**record, "tables": tables}, indent=2))
    _plot_rows(tables[PROTOCOLS[-1].name], results / "results.png", PROTOCOLS[-1].name)
    if last_estimator is not None:
        _plot_examples(last_estimator, batches[0], results / "examples.png")
    print(md, flush=True)
    return tables
