"""Bottom-up grouping of heatmaps and part affinity fields into people (Cao et al., CVPR 2017).

Steps, all batched over images:

1. Peaks: non-maximum suppression on each joint heatmap (a cell equal to its 3x3 max-pool, strictly above
   the neighbours before it in raster order so a flat top gives one peak, and above ``peak_threshold``), the
   ``max_peaks`` strongest per joint, refined to sub-cell precision by the heatmap-weighted centroid of the
   3x3 neighbourhood.
2. Limb candidates: for every limb (a, b) and every pair of a-peaks and b-peaks, the PAF line integral
   approximated by ``num_samples`` points on the segment (bilinear interpolation of the field between cell
   centres, as OpenPose integrates its upsampled maps): the mean of the dot product of the
   field with the unit segment direction, plus Cao's distance prior ``min(0, 0.5 G / length - 1)``. A pair is
   a candidate when at least ``min_fraction`` of the samples have a dot product above ``min_dot`` and its score
   is positive. Peaks of both joints in one cell (a limb shorter than a cell) score the field's magnitude.
3. Greedy bipartite matching per limb in decreasing score (computed as rounds of mutually-best pairs, which
   gives the same matching as sorting when scores are distinct).
4. Assembly along the tree (parents before children): a matched child peak joins its parent's person; a
   matched parent peak that has no person yet starts one. People are kept when they have at least
   ``min_joints`` joints and a root (the root joint, or else the midpoint of two fallback joints).

Convention: grid cell (row i, col j) is centred at ((j + 0.5) S / G, (i + 0.5) S / G) pixels for an S-pixel
image and a G x G grid (``geometry/camera.py``); PAF channel 2k is x (u, right), 2k + 1 is y (v, down), and
points from the limb's first joint to its second. Pure tensor code: no Lightning import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lightning_mp3d.skeleton import JOINT_INDEX, LIMBS, NUM_JOINTS, NUM_LIMBS, ROOT


class GroupedPeople(NamedTuple):
    """People found in each image (padded to Pmax, strongest first).

    Attributes:
        keypoints: (B, Pmax, J, 2) pixels (u, v) in the input image; 0 where missing.
        confidence: (B, Pmax, J) heatmap peak value, 0 = missing joint.
        mask: (B, Pmax) bool, True for a real person.
        roots_px: (B, Pmax, 2) pixels of the root (pelvis, else the hip midpoint).
    """

    keypoints: torch.Tensor
    confidence: torch.Tensor
    mask: torch.Tensor
    roots_px: torch.Tensor


class Peaks(NamedTuple):
    """Heatmap peaks, padded to K per joint.

    Attributes:
        xy: (B, J, K, 2) grid units (cell (i, j) centre = (j + 0.5, i + 0.5)).
        score: (B, J, K) heatmap value at the peak; 0 where invalid.
        valid: (B, J, K) bool.
    """

    xy: torch.Tensor
    score: torch.Tensor
    valid: torch.Tensor


def find_peaks(heatmaps: torch.Tensor, *, threshold: float = 0.1, max_peaks: int = 16, refine: bool = True) -> Peaks:
    """Local maxima of each heatmap above ``threshold``.

    Args:
        heatmaps: (B, J, G, G).
        threshold: minimum peak value.
        max_peaks: K, the most peaks kept per joint (strongest first).
        refine: sub-cell refinement by the 3x3 weighted centroid.

    Returns:
        :class:`Peaks` with K = min(max_peaks, G*G).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, J, G, G), got {tuple(heatmaps.shape)}")
    b, j, h, w = heatmaps.shape
    # a peak is >= its 8 neighbours and > the 4 that precede it in raster order (one peak per flat plateau)
    nbrs = F.unfold(heatmaps.reshape(b * j, 1, h, w), 3, padding=1).view(b, j, 9, h, w)
    is_peak = (heatmaps[:, :, None] >= nbrs).all(2) & (heatmaps[:, :, None] > nbrs[:, :, :4]).all(2)
    is_peak = is_peak & (heatmaps > threshold)
    k = min(max_peaks, h * w)
    values = torch.where(is_peak, heatmaps, torch.full_like(heatmaps, -1.0)).flatten(2)
    score, idx = values.topk(k, dim=2)  # (B, J, K)
    valid = score > threshold
    row = torch.div(idx, w, rounding_mode="floor")
    col = idx % w
    xy = torch.stack((col, row), -1).to(heatmaps.dtype) + 0.5  # (B, J, K, 2)
    if refine:
        padded = F.pad(heatmaps.clamp_min(0), (1, 1, 1, 1))
        offsets = torch.tensor([-1, 0, 1], device=heatmaps.device)
        rr = (row[..., None, None] + 1 + offsets[:, None]).expand(*row.shape, 3, 3)  # (B, J, K, 3, 3)
        cc = (col[..., None, None] + 1 + offsets[None, :]).expand(*col.shape, 3, 3)
        flat = padded.flatten(2)  # (B, J, (G+2)^2)
        patch = flat.gather(2, (rr * (w + 2) + cc).flatten(2)).view(b, j, k, 3, 3)
        total = patch.sum((-1, -2)).clamp_min(1e-12)
        off = offsets.to(heatmaps.dtype)
        dx = (patch.sum(-2) * off).sum(-1) / total
        dy = (patch.sum(-1) * off).sum(-1) / total
        xy = xy + torch.stack((dx, dy), -1)
    xy = torch.where(valid[..., None], xy, torch.zeros_like(xy))
    return Peaks(xy, torch.where(valid, score, torch.zeros_like(score)), valid)


def score_limb_candidates(
    paf: torch.Tensor,
    xy_a: torch.Tensor,
    xy_b: torch.Tensor,
    valid_a: torch.Tensor,
    valid_b: torch.Tensor,
    *,
    num_samples: int = 10,
    min_dot: float = 0.05,
    min_fraction: float = 0.8,
) -> torch.Tensor:
    """PAF line-integral scores of every (a-peak, b-peak) pair of one limb.

    Args:
        paf: (B, 2, G, G) the limb's field (x, y).
        xy_a: (B, Ka, 2), xy_b: (B, Kb, 2) peak positions in grid units.
        valid_a: (B, Ka), valid_b: (B, Kb) bool.

    Returns:
        (B, Ka, Kb) scores; -inf where the pair is not a candidate.
    """
    b, _, h, w = paf.shape
    t = torch.linspace(0.0, 1.0, num_samples, device=paf.device, dtype=paf.dtype)
    pa, pb = xy_a[:, :, None, :], xy_b[:, None, :, :]  # (B, Ka, 1, 2), (B, 1, Kb, 2)
    d = pb - pa  # (B, Ka, Kb, 2)
    length = d.norm(dim=-1)  # (B, Ka, Kb)
    short = length < 1e-3
    unit = d / length.clamp_min(1e-3)[..., None]
    pts = pa[..., None, :] + t[:, None] * d[..., None, :]  # (B, Ka, Kb, S, 2) grid units
    norm = pts * torch.tensor([2.0 / w, 2.0 / h], device=paf.device, dtype=paf.dtype) - 1.0
    field = F.grid_sample(paf, norm.flatten(1, 2), mode="bilinear", padding_mode="border", align_corners=False)
    field = field.view(b, 2, *pts.shape[1:4]).movedim(1, -1)  # (B, Ka, Kb, S, 2)
    dots = (field * unit[..., None, :]).sum(-1)  # (B, Ka, Kb, S)
    dots = torch.where(short[..., None], field.norm(dim=-1), dots)
    prior = (0.5 * h / length.clamp_min(1e-3) - 1.0).clamp_max(0.0)
    score = dots.mean(-1) + torch.where(short, torch.zeros_like(prior), prior)
    ok = ((dots > min_dot).to(paf.dtype).mean(-1) >= min_fraction) & (score > 0)
    ok = ok & valid_a[:, :, None] & valid_b[:, None, :]
    return torch.where(ok, score, torch.full_like(score, float("-inf")))


def greedy_match(score: torch.Tensor) -> torch.Tensor:
    """Greedy bipartite matching in decreasing score; -inf entries are never matched.

    Args:
        score: (B, N, M).

    Returns:
        (B, N) long: the matched column of each row, -1 if none.
    """
    b, n, m = score.shape
    s = score.clone()
    match = torch.full((b, n), -1, dtype=torch.long, device=score.device)
    rows = torch.arange(n, device=score.device)
    for _ in range(min(n, m)):
        best_val, best_col = s.max(2)  # (B, N)
        best_row = s.argmax(1)  # (B, M)
        mutual = (best_row.gather(1, best_col) == rows) & torch.isfinite(best_val)
        if not bool(mutual.any()):
            break
        match = torch.where(mutual, best_col, match)
        s = s.masked_fill(mutual[:, :, None], float("-inf"))
        taken = torch.zeros((b, m + 1), dtype=torch.bool, device=score.device)
        taken.scatter_(1, torch.where(mutual, best_col, m), True)
        s = s.masked_fill(taken[:, None, :m], float("-inf"))
    return match


class Assembly(NamedTuple):
    """Un-filtered people from :func:`assemble`: keypoints (B, Q, J, 2) grid units, confidence (B, Q, J)."""

    keypoints: torch.Tensor
    confidence: torch.Tensor


def assemble(
    peaks: Peaks,
    pafs: torch.Tensor,
    limbs: Sequence[tuple[int, int]],
    paf_channels: Sequence[tuple[int, int]],
    root: int,
    **score_kwargs: float,
) -> Assembly:
    """Match limbs and assemble people along a tree.

    Args:
        peaks: :class:`Peaks` (B, J, K).
        pafs: (B, C, G, G).
        limbs: (a, b) joint pairs, parents before children (a is already placed when limb (a, b) is processed).
        paf_channels: (x channel, y channel) of each limb in ``pafs``.
        root: the tree's root joint; each of its peaks starts a person.
        **score_kwargs: passed to :func:`score_limb_candidates`.

    Returns:
        :class:`Assembly` with Q = K (1 + len(limbs)) person slots; empty slots have zero confidence.
    """
    b, j, k = peaks.valid.shape
    q = k * (1 + len(limbs))
    dev = pafs.device
    owner = torch.full((b, j, k), -1, dtype=torch.long, device=dev)
    ar = torch.arange(k, device=dev)
    owner[:, root] = torch.where(peaks.valid[:, root], ar, -1)
    next_id = torch.full((b,), k, dtype=torch.long, device=dev)
    for (ja, jb), (cx, cy) in zip(limbs, paf_channels):
        paf = pafs[:, [cx, cy]]
        score = score_limb_candidates(
            paf, peaks.xy[:, ja], peaks.xy[:, jb], peaks.valid[:, ja], peaks.valid[:, jb], **score_kwargs
        )
        match = greedy_match(score)  # (B, K) a-peak -> b-peak
        has = match >= 0
        pid = owner[:, ja]
        need = has & (pid < 0)
        new = next_id[:, None] + need.long().cumsum(1) - 1
        pid = torch.where(need, new, pid)
        next_id = next_id + need.long().sum(1)
        owner[:, ja] = torch.where(need, pid, owner[:, ja])
        child = torch.full((b, k + 1), -1, dtype=torch.long, device=dev)
        child.scatter_(1, torch.where(has, match, k), torch.where(has, pid, -1))
        owner[:, jb] = child[:, :k]
    slot = torch.where(owner >= 0, owner, q)  # (B, J, K); q is a dump slot
    bi = torch.arange(b, device=dev)[:, None, None].expand(b, j, k)
    ji = torch.arange(j, device=dev)[None, :, None].expand(b, j, k)
    keypoints = peaks.xy.new_zeros(b, q + 1, j, 2)
    confidence = peaks.score.new_zeros(b, q + 1, j)
    keypoints[bi, slot, ji] = peaks.xy
    confidence[bi, slot, ji] = torch.where(owner >= 0, peaks.score, torch.zeros_like(peaks.score))
    return Assembly(keypoints[:, :q], confidence[:, :q])


def select_people(
    keypoints: torch.Tensor,
    confidence: torch.Tensor,
    *,
    root: int,
    fallback: tuple[int, int],
    min_joints: int,
    max_people: int,
) -> GroupedPeople:
    """Keep people with a root and at least ``min_joints`` joints, strongest first, padded to ``max_people``.

    Args:
        keypoints: (B, Q, J, 2) pixels; confidence: (B, Q, J).
        root: root joint; fallback: two joints whose midpoint is the root when the root is missing.

    Returns:
        :class:`GroupedPeople` with Pmax = max_people.
    """
    present = confidence > 0
    fa, fb = fallback
    has_root = present[..., root]
    has_fallback = present[..., fa] & present[..., fb]
    mid = 0.5 * (keypoints[..., fa, :] + keypoints[..., fb, :])
    roots = torch.where(has_root[..., None], keypoints[..., root, :], mid)
    keep = (has_root | has_fallback) & (present.sum(-1) >= min_joints)
    strength = torch.where(keep, confidence.sum(-1), torch.full_like(confidence[..., 0], -1.0))
    p = min(max_people, strength.shape[1])
    top, order = strength.topk(p, dim=1)  # (B, P)
    mask = top >= 0
    kp = keypoints.gather(1, order[..., None, None].expand(-1, -1, *keypoints.shape[2:]))
    conf = confidence.gather(1, order[..., None].expand(-1, -1, confidence.shape[2]))
    roots = roots.gather(1, order[..., None].expand(-1, -1, 2))
    if p < max_people:
        pad = max_people - p
        kp, conf = F.pad(kp, (0, 0, 0, 0, 0, pad)), F.pad(conf, (0, 0, 0, pad))
        roots, mask = F.pad(roots, (0, 0, 0, pad)), F.pad(mask, (0, pad))
    m = mask[..., None]
    conf = torch.where(m, conf, torch.zeros_like(conf))
    kp = torch.where(m[..., None] & (conf[..., None] > 0), kp, torch.zeros_like(kp))
    return GroupedPeople(kp, conf, mask, torch.where(m, roots, torch.zeros_like(roots)))


def group_people(
    heatmaps: torch.Tensor,
    pafs: torch.Tensor,
    *,
    image_size: int = 224,
    peak_threshold: float = 0.1,
    max_people: int = 8,
    max_peaks: int = 16,
    min_joints: int = 3,
    num_samples: int = 10,
    min_dot: float = 0.05,
    min_fraction: float = 0.8,
) -> GroupedPeople:
    """Group our 15-joint heatmaps and 14-limb PAFs into people.

    Args:
        heatmaps: (B, 15, G, G) in [0, 1].
        pafs: (B, 28, G, G); limb k = ``skeleton.LIMBS[k]`` at channels 2k (x) and 2k + 1 (y).
        image_size: S, the input image side in pixels (the grid covers [0, S]^2).
        peak_threshold: minimum heatmap peak.
        max_people: Pmax.
        max_peaks: most peaks kept per joint.
        min_joints: fewest joints of a kept person.
        num_samples, min_dot, min_fraction: PAF line-integral settings (see module doc).

    Returns:
        :class:`GroupedPeople` in input-image pixels. The pelvis is the tree root; a person whose pelvis peak is
        missing falls apart into fragments that have no root and are dropped.
    """
    if heatmaps.ndim != 4 or heatmaps.shape[1] != NUM_JOINTS:
        raise ValueError(f"heatmaps must be (B, {NUM_JOINTS}, G, G), got {tuple(heatmaps.shape)}")
    if pafs.shape != (heatmaps.shape[0], 2 * NUM_LIMBS, *heatmaps.shape[2:]):
        raise ValueError(f"pafs must be (B, {2 * NUM_LIMBS}, G, G) like heatmaps, got {tuple(pafs.shape)}")
    grid = heatmaps.shape[-1]
    peaks = find_peaks(heatmaps, threshold=peak_threshold, max_peaks=max_peaks)
    channels = [(2 * k, 2 * k + 1) for k in range(NUM_LIMBS)]
    kw = {"num_samples": num_samples, "min_dot": min_dot, "min_fraction": min_fraction}
    asm = assemble(peaks, pafs, LIMBS, channels, ROOT, **kw)
    fallback = (JOINT_INDEX["r_hip"], JOINT_INDEX["l_hip"])
    return select_people(
        asm.keypoints * (image_size / grid),
        asm.confidence,
        root=ROOT,
        fallback=fallback,
        min_joints=min_joints,
        max_people=max_people,
    )


def match_people_by_root(
    pred_roots: torch.Tensor,
    pred_mask: torch.Tensor,
    gt_roots: torch.Tensor,
    gt_mask: torch.Tensor,
    max_distance: float = float("inf"),
) -> torch.Tensor:
    """Greedy matching of ground-truth people to predictions by root distance (closest pairs first).

    Args:
        pred_roots: (B, Pp, 2), pred_mask: (B, Pp) bool; gt_roots: (B, Pg, 2), gt_mask: (B, Pg) bool.
        max_distance: pairs farther apart (same units as the roots) are never matched.

    Returns:
        (B, Pg) long: the matched prediction of each ground-truth person, -1 if none.
    """
    dist = (gt_roots[:, :, None, :] - pred_roots[:, None, :, :]).norm(dim=-1)  # (B, Pg, Pp)
    ok = gt_mask[:, :, None] & pred_mask[:, None, :] & (dist <= max_distance)
    return greedy_match(torch.where(ok, -dist, torch.full_like(dist, float("-inf"))))
