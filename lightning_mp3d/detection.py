"""People matched to the GT by their root pixels, and the detection and learning diagnostics of the results table.

``match_roots`` pairs predicted and GT people within one output cell (16 px); ``detection_rates`` turns the pairs into
root precision / recall; ``teacher_detection`` scores the teacher's own people (the roots the students' root heatmap
learns from on images); ``people_diagnostics`` adds AP_root and the 3D diagnostics of the detected people
(``metrics.diagnostics``), ``gt_root_diagnostics`` the same decoded at the GT roots. Used by ``report`` and the
benchmarks; no Lightning import.
"""

from __future__ import annotations

import torch

DETECTION_MATCH_PX = 16.0  # one output cell: a predicted root within 16 px of a GT root detects that person


def match_roots(pred_px: torch.Tensor, pred_mask: torch.Tensor, gt_px: torch.Tensor, gt_mask: torch.Tensor,
                max_px: float = DETECTION_MATCH_PX) -> torch.Tensor:  # fmt: skip
    """Hungarian matching of predicted to GT root pixels per image, only pairs within ``max_px``.

    Pairs farther apart are gated out before the assignment (cost 1e9), so it finds the most pairs within ``max_px``
    (then the smallest total distance); an assignment over raw distances could trade a close pair for two far ones
    and drop all three.

    Args:
        pred_px: (B, K, 2) predicted root pixels.
        pred_mask: (B, K) bool, real predictions.
        gt_px: (B, G, 2) GT root pixels.
        gt_mask: (B, G) bool, real GT people.
        max_px: farthest a matched pair may be apart, pixels.

    Returns:
        (B, G) long index of the matched prediction, -1 where the GT person is missed.
    """
    from scipy.optimize import linear_sum_assignment

    index = torch.full(gt_mask.shape, -1, dtype=torch.long)
    dist = torch.cdist(gt_px.double(), pred_px.double())  # (B, G, K)
    dist = dist.masked_fill(~gt_mask[:, :, None] | ~pred_mask[:, None, :] | (dist > max_px), 1e9)
    for i in range(dist.shape[0]):  # evaluation only: one small assignment per image
        rows, cols = linear_sum_assignment(dist[i].numpy())
        ok = dist[i, rows, cols] <= max_px
        index[i, torch.as_tensor(rows[ok.numpy()])] = torch.as_tensor(cols[ok.numpy()])
    return index


def detection_rates(
    pred_masks: list[torch.Tensor], indices: list[torch.Tensor], batches: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """People predicted and in the GT, and root precision / recall (%), from each batch's ``match_roots`` result."""
    n_pred = sum(float(m.sum()) for m in pred_masks)
    n_matched = sum(float((i >= 0).sum()) for i in indices)
    n_gt = sum(float(b["gt_mask"].sum()) for b in batches)
    return {
        "people_pred": n_pred,
        "people_gt": n_gt,
        "precision": 100 * n_matched / n_pred if n_pred else float("nan"),
        "recall": 100 * n_matched / n_gt if n_gt else float("nan"),
    }


def teacher_detection(people: list, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Root precision / recall of the teacher's people (one ``GroupedPeople`` per batch), the students' D_I roots."""
    pairs = zip(people, batches, strict=True)
    indices = [match_roots(p.roots_px, p.mask, b["gt_roots_px"], b["gt_mask"]) for p, b in pairs]
    return detection_rates([p.mask for p in people], indices, batches)


def people_diagnostics(predictions: list, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Detection (root precision / recall within one cell, AP_root at 25 cm) and learning diagnostics.

    The diagnostics are ``metrics.diagnostics``'s (root-relative MPJPE, canonical MPJPE, orientation, spread) on the
    detected people.
    """
    from lightning_mp3d.metrics import APRoot, RootsBatch
    from lightning_mp3d.metrics.diagnostics import pose_diagnostics

    preds, gts, indices, ap = [], [], [], APRoot()
    for b, out in zip(batches, predictions, strict=True):
        index = match_roots(out.roots_px, out.mask, b["gt_roots_px"], b["gt_mask"])
        matched = index >= 0
        rows = torch.arange(index.shape[0])[:, None]
        preds.append(out.poses[rows, index.clamp(min=0)][matched]), gts.append(b["gt_poses"][matched])
        indices.append(index)
        ap.update(RootsBatch(out.poses[..., 0, :], out.confidence, out.mask, b["gt_poses"][..., 0, :], b["gt_mask"]))
    pred, gt = torch.cat(preds), torch.cat(gts)
    d = pose_diagnostics(pred[None], gt[None], torch.ones(1, pred.shape[0], dtype=torch.bool))
    return {
        **detection_rates([out.mask for out in predictions], indices, batches),
        "ap_root": 100 * float(ap.compute()),
        "mpjpe_rel_detected": d.mpjpe_rel,
        "canonical_mpjpe": d.canonical_mpjpe,
        "orientation_deg": d.orientation_deg,
        "spread_ratio": d.spread_ratio,
        "mean_pose_mpjpe": d.mean_pose_mpjpe,
        "mean_canonical_mpjpe": d.mean_canonical_mpjpe,
    }


@torch.no_grad()
def gt_root_diagnostics(estimator: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """The student's people decoded at the GT root pixels (perfect detection): its 3D pose quality on its own.

    That is apart from the root heatmap, whose people come from the teacher's, with the teacher's false positives.
    """
    from lightning_mp3d.geometry import pixel_to_grid
    from lightning_mp3d.metrics.diagnostics import pose_diagnostics

    preds, gts = [], []
    for b in batches:
        s = estimator.head(estimator.encoder.encode(b["image"]))
        cells = pixel_to_grid(b["gt_roots_px"], s.shape[-1], b["image"].shape[-1])
        scene = estimator.scene_decoder(s, cells, b["gt_mask"], b["gt_roots_px"])
        preds.append(scene.poses[b["gt_mask"]]), gts.append(b["gt_poses"][b["gt_mask"]])
    pred, gt = torch.cat(preds), torch.cat(gts)
    d = pose_diagnostics(pred[None], gt[None], torch.ones(1, pred.shape[0], dtype=torch.bool))
    return {
        "gt_roots_mpjpe_rel": d.mpjpe_rel,
        "gt_roots_canonical_mpjpe": d.canonical_mpjpe,
        "gt_roots_orientation_deg": d.orientation_deg,
        "gt_roots_spread_ratio": d.spread_ratio,
    }
