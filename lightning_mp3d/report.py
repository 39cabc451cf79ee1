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
import time
from pathlib import Path
from typing import NamedTuple

import torch

from lightning_mp3d.atomic import save_figure_atomic, write_text_atomic
from lightning_mp3d.detection import DETECTION_MATCH_PX, gt_root_diagnostics, people_diagnostics, teacher_detection
from lightning_mp3d.metrics import PCK2D, BoxIoU, MatchSpec, PeopleBatch
from lightning_mp3d.metrics.functional import MATCH_THRESHOLD_PX_224, PCK2D_THRESHOLD_PX
from lightning_mp3d.synth.batches import target_test_set


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
    "distill": "warm-up, L_distl (distill)",
    "phase1_distl": "L_distl only (phase1 without L_recon, L_adapt)",
    "phase1_recon": "+ L_recon (phase1 without L_adapt)",
    "phase1": "+ L_recon + L_adapt (phase1)",
    "phase2": "+ L_ss (phase2)",
    "refine": "+ two-stage refinement H′ (refine)",
    "ours_ws": "Ours-Ws (phase1 + L_2D on target GT)",
    "ours_fs": "Ours-Fs (phase1 + L_3D on target GT)",
    "mean_pose": "reference: mean pose (test GT mean, GT roots)",
    "knn_lifting": "reference: k-NN lifting of exact GT 2D (D_syn bank)",
}
REFERENCE_ROWS = ("mean_pose", "knn_lifting")
LEARNING = "learning"  # the diagnostics table's key in ``tables``


def teacher_2d(people: list, batches: list[dict[str, torch.Tensor]], protocol: Protocol) -> dict[str, float]:
    """2D-PCK, 2D-MPJPE and box IoU of the teacher's grouped people (one ``GroupedPeople`` per batch)."""
    kw = {"num_sequences": 1, "match": MatchSpec(threshold_px=protocol.match_px)}
    pck, iou = PCK2D(threshold_px=protocol.pck2d_px, **kw), BoxIoU(**kw)
    for b, found in zip(batches, people, strict=True):
        for metric in (pck, iou):
            metric.update(PeopleBatch(None, found.keypoints, found.mask, None, b["gt_2d"], b["gt_mask"], b["sequence"]))
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

    match = MatchSpec(threshold_px=protocol.match_px)
    r = evaluate(predictor, batches, num_sequences=1, sequence_names=["target"], match=match)
    pck2d = PCK2D(threshold_px=protocol.pck2d_px, num_sequences=1, match=match)
    for b, out in zip(batches, predictions, strict=True):
        pck2d.update(
            PeopleBatch(out.poses, out.keypoints, out.mask, b["gt_poses"], b["gt_2d"], b["gt_mask"], b["sequence"])
        )
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


def reference_predictions(batches: list[dict[str, torch.Tensor]], name: str, knn_bank: int = 100_000) -> list:
    """Predictions of a reference predictor on the GT people (perfect detection, GT roots and depths).

    ``mean_pose`` (the test set's own mean root-relative pose) or ``knn_lifting`` (``baselines.KNNLifting``).
    """
    from lightning_mp3d.baselines import KNNLifting, mean_pose, mean_root_relative_pose
    from lightning_mp3d.inference import Prediction

    all_gt = torch.cat([b["gt_poses"][b["gt_mask"]] for b in batches])
    rel_mean = mean_root_relative_pose(all_gt, torch.ones(all_gt.shape[0], dtype=torch.bool))
    knn = KNNLifting(num_people=knn_bank) if name == "knn_lifting" else None
    out = []
    for b in batches:
        gt, mask = b["gt_poses"], b["gt_mask"]
        root = gt[..., :1, :]
        if knn is None:
            poses = mean_pose(gt, mask, rel_mean)
        else:
            poses = torch.zeros_like(gt)
            poses[mask] = knn(b["gt_2d"][mask], b["gt_depth"][mask]) + root[mask]
        out.append(Prediction(poses, b["gt_2d"], mask.float(), mask, b["gt_roots_px"]))
    return out


def _markdown(tables: dict[str, dict[str, dict[str, float]]], num_images: int, preset: str) -> str:
    def f(v: float | None) -> str:
        return "–" if v is None or v != v else f"{v:.1f}"

    lines = [f"# Target-domain results ({preset} preset, {num_images} held-out rendered images)", ""]
    lines += [
        "## Does the student estimate 3D people? Detection and learning diagnostics",
        "",
        f"People matched to GT by their root pixels (Hungarian, within {DETECTION_MATCH_PX:g} px = one output cell).",
        "MPJPE: root-relative camera frame, detected people; canonical: in each person's own body frame (the",
        "articulated pose); orientation: angle between the predicted and true body frames; spread: how much the",
        "predicted poses differ from person to person, relative to the GT's (0 = one pose for everybody). The",
        "reference rows use GT people, roots and depths (perfect detection).",
        "",
        "| row | people pred / GT | precision ↑ | recall ↑ | AP_root ↑ | MPJPE mm ↓ | canonical mm ↓ | orientation ° ↓ "
        "| spread pred/GT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in tables.get(LEARNING, {}).items():  # the teacher's row has the detection columns only
        spread = "–" if "spread_ratio" not in m else f"{m['spread_ratio']:.2f}"
        lines.append(
            f"| {ROW_NAMES.get(name, name)} | {m['people_pred']:.0f} / {m['people_gt']:.0f} | {f(m['precision'])} | "
            f"{f(m['recall'])} | {f(m.get('ap_root'))} | {f(m.get('mpjpe_rel_detected'))} | "
            f"{f(m.get('canonical_mpjpe'))} | {f(m.get('orientation_deg'))} | {spread} |"
        )
    at_gt = {k: m for k, m in tables.get(LEARNING, {}).items() if "gt_roots_mpjpe_rel" in m}
    if at_gt:
        lines += [
            "",
            "The same students decoded at the GT root pixels (perfect detection): the 3D pose on its own.",
            "",
            "| row | MPJPE mm ↓ | canonical mm ↓ | orientation ° ↓ | spread pred/GT |",
            "|---|---|---|---|---|",
        ]
        for name, m in at_gt.items():
            lines.append(
                f"| {ROW_NAMES.get(name, name)} | {f(m['gt_roots_mpjpe_rel'])} | {f(m['gt_roots_canonical_mpjpe'])} | "
                f"{f(m['gt_roots_orientation_deg'])} | {m['gt_roots_spread_ratio']:.2f} |"
            )
    students = [m for m in tables.get(LEARNING, {}).values() if "mean_canonical_mpjpe" in m]
    if students:
        lines += [
            "",
            f"Mean canonical pose of the GT: {f(students[0]['mean_canonical_mpjpe'])} mm canonical MPJPE.",
            "",
        ]
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

    names = [n for n in rows if n != "teacher" and n not in REFERENCE_ROWS]
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


SEED_METRICS = (  # (key, table, metric, header)
    ("pck3d_rel", "grid scale", "pck3d_rel", "3DPCK_rel (grid) ↑"),
    ("mpjpe", LEARNING, "mpjpe_rel_detected", "MPJPE mm ↓"),
    ("canonical", LEARNING, "canonical_mpjpe", "canonical mm ↓"),
    ("orientation", LEARNING, "orientation_deg", "orientation ° ↓"),
    ("spread", LEARNING, "spread_ratio", "spread pred/GT"),
    ("precision", LEARNING, "precision", "precision ↑"),
    ("recall", LEARNING, "recall", "recall ↑"),
)


def seed_summary(per_seed: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """{row: [metrics of each seed]} -> {row: {key: [mean, std, n]}} (std with n - 1; 0 for one seed)."""
    out = {}
    for row, runs in per_seed.items():
        out[row] = {}
        for key, *_ in SEED_METRICS:
            values = torch.tensor([r[key] for r in runs], dtype=torch.float64)
            std = float(values.std()) if len(values) > 1 else 0.0
            out[row][key] = [float(values.mean()), std, len(values)]
    return out


def _seed_markdown(summary: dict[str, dict[str, list[float]]]) -> str:
    lines = [
        "## Table 2 ablation over seeds (mean ± std)",
        "",
        "| row | seeds | " + " | ".join(h for *_, h in SEED_METRICS) + " |",
        "|---|---|" + "---|" * len(SEED_METRICS),
    ]
    for row, m in summary.items():
        cells = " | ".join(f"{m[k][0]:.1f} ± {m[k][1]:.1f}" if k != "spread" else f"{m[k][0]:.2f} ± {m[k][1]:.2f}"
                           for k, *_ in SEED_METRICS)  # fmt: skip
        lines.append(f"| {ROW_NAMES.get(row, row)} | {m['pck3d_rel'][2]:.0f} | {cells} |")
    rows = list(summary)
    notes = []
    for a, b in zip(rows, rows[1:], strict=False):
        for key in ("pck3d_rel", "canonical"):
            (ma, sa, _), (mb, sb, _) = summary[a][key], summary[b][key]
            beyond = abs(mb - ma) > max(sa, sb)
            notes.append(f"{ROW_NAMES.get(b, b)} vs {ROW_NAMES.get(a, a)}, {key}: {mb - ma:+.1f} "
                         f"({'beyond' if beyond else 'within'} one std)")  # fmt: skip
    return "\n".join([*lines, "", *[f"- {n}" for n in notes], ""])


def evaluate_chain(
    runs: Path,
    results: Path,
    preset: str = "tiny",
    num_images: int = 128,
    extra_rows: dict[str, Path] | None = None,
    seed_rows: dict[str, list[Path]] | None = None,
    knn_bank: int = 100_000,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate the teacher and every trained student stage under ``runs``; write the tables to ``results``.

    ``extra_rows`` adds ablation checkpoints (row name -> student checkpoint), placed before the stage they vary;
    ``seed_rows`` (row -> one checkpoint per seed) adds the mean ± std table of the Table 2 ablation; ``knn_bank``
    is the D_syn bank size of the k-NN lifting reference.
    Returns ``{protocol name: {row: {metric: value}}}`` (plus the ``learning`` diagnostics and ``seeds`` summary).
    """
    from lightning_mp3d.inference import PoseEstimator
    from lightning_mp3d.models.teacher import load_teacher

    results.mkdir(parents=True, exist_ok=True)
    batches = target_test_set(num_images)
    tables: dict[str, dict[str, dict[str, float]]] = {p.name: {} for p in PROTOCOLS} | {LEARNING: {}}
    teacher_ckpt = runs / "teacher" / "checkpoints" / "last.ckpt"
    if teacher_ckpt.is_file():
        teacher = load_teacher(teacher_ckpt)
        with torch.no_grad():  # grouped once, scored by every table
            people = [teacher.grouped(b["image"]) for b in batches]
        for protocol in PROTOCOLS:
            tables[protocol.name]["teacher"] = teacher_2d(people, batches, protocol)
        tables[LEARNING]["teacher"] = teacher_detection(people, batches)
    last_estimator = None
    rows = {stage: runs / stage / "checkpoints" / "last.ckpt" for stage in STUDENT_STAGES}
    for name, path in (extra_rows or {}).items():  # e.g. phase1_recon goes just before phase1
        order = list(rows)
        at = order.index(name.split("_")[0]) if name.split("_")[0] in order else len(order)
        rows = dict([*list(rows.items())[:at], (name, Path(path)), *list(rows.items())[at:]])

    def score(row: str, predictions: list, estimator: torch.nn.Module | None = None) -> None:
        for protocol in PROTOCOLS:
            tables[protocol.name][row] = student_metrics(predictions, batches, protocol)
        tables[LEARNING][row] = people_diagnostics(predictions, batches)
        if estimator is not None:
            tables[LEARNING][row] |= gt_root_diagnostics(estimator, batches)

    for stage, ckpt in rows.items():
        if ckpt.is_file():
            estimator = PoseEstimator.from_stage_checkpoint(ckpt)
            with torch.no_grad():
                score(stage, [estimator(b["image"]) for b in batches], estimator)
            if stage in STUDENT_STAGES:  # the pictures show the chain's last student, not an ablation or Ours-Fs
                last_estimator = estimator
    refine_ckpt = runs / "refine" / "checkpoints" / "last.ckpt"
    if refine_ckpt.is_file():  # the two-stage mode (paper Fig. 6) beside the single-shot rows, and both modes' speed
        speed = {}
        for mode in (False, True):
            estimator = PoseEstimator.from_stage_checkpoint(refine_ckpt, refine=mode)
            start = time.perf_counter()
            with torch.no_grad():
                predictions = [estimator(b["image"]) for b in batches]
            speed["two_stage" if mode else "single_shot"] = num_images / (time.perf_counter() - start)
        score("refine", predictions)
        tables["speed_img_per_s"] = speed
    if not any(tables.values()):
        raise FileNotFoundError(f"no trained stage under {runs}/<stage>/checkpoints/last.ckpt")
    for name in REFERENCE_ROWS:
        score(name, reference_predictions(batches, name, knn_bank))
    md = _markdown(tables, num_images, preset)
    if "speed_img_per_s" in tables:
        sp = tables["speed_img_per_s"]
        md += (
            f"\nSpeed here (batches of 16, CPU threads: {torch.get_num_threads()}): single-shot "
            f"{sp['single_shot']:.1f} img/s, with the two-stage refinement H′ {sp['two_stage']:.1f} img/s.\n"
        )
    if seed_rows:
        per_seed: dict[str, list[dict[str, float]]] = {}
        for row, ckpts in seed_rows.items():
            for ckpt in ckpts:
                estimator = PoseEstimator.from_stage_checkpoint(ckpt)
                with torch.no_grad():
                    predictions = [estimator(b["image"]) for b in batches]
                found = {LEARNING: people_diagnostics(predictions, batches)}
                found["grid scale"] = student_metrics(predictions, batches, PROTOCOLS[-1])
                per_seed.setdefault(row, []).append({k: found[t][m] for k, t, m, _ in SEED_METRICS})
        tables["seeds"] = seed_summary(per_seed)
        md += "\n" + _seed_markdown(tables["seeds"])
    write_text_atomic(results / "results.md", md)
    record = {"preset": preset, "num_images": num_images, "protocols": [p._asdict() for p in PROTOCOLS]}
    write_text_atomic(results / "results.json", json.dumps({**record, "tables": tables}, indent=2))
    _plot_rows(tables[PROTOCOLS[-1].name], results / "results.png", PROTOCOLS[-1].name)
    if last_estimator is not None:
        _plot_examples(last_estimator, batches[0], results / "examples.png")
    print(md, flush=True)
    return tables
