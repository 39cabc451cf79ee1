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

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lightning_mp3d.peaks import peak_cells, subcell_offsets
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
    """Local maxima of each heatmap above ``threshold`` (``peaks.peak_cells``, one peak per flat plateau).

    Args:
        heatmaps: (B, J, G, G).
        threshold: minimum peak value.
        max_peaks: K, the most peaks kept per joint (strongest first).
        refine: sub-cell refinement by the 3x3 weighted centroid (``peaks.subcell_offsets``).

    Returns:
        :class:`Peaks` with K = min(max_peaks, G*G).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, J, G, G), got {tuple(heatmaps.shape)}")
    cells, score, valid = peak_cells(heatmaps, threshold, max_peaks)
    xy = cells.to(heatmaps.dtype) + 0.5  # (B, J, K, 2)
    if refine:
        xy = xy + subcell_offsets(heatmaps, cells)
    xy = torch.where(valid[..., None], xy, torch.zeros_like(xy))
    return Peaks(xy, torch.where(valid, score, torch.zeros_like(score)), valid)


def _magnitude(field: torch.Tensor) -> torch.Tensor:
    """|field| over the last dim (2), bit for bit ``field.norm(dim=-1)`` on the CPU, but elementwise and ~50x faster.

    It matches torch's generic CPU reduction on this strided layout (squares summed in float, a correctly rounded
    sqrt); the float ``Tensor.sqrt`` on CPU is SLEEF's, within 0.5 ulp but not always the rounded one.
    """
    f = field.float()
    return (f[..., 0] * f[..., 0] + f[..., 1] * f[..., 1]).double().sqrt().to(field.dtype)


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
    """PAF line-integral scores of every (a-peak, b-peak) pair of one limb, or of many limbs at once.

    Args:
        paf: (..., 2, G, G) the limb's field (x, y); leading dims (B, or B x L for all limbs) are batch dims.
        xy_a: (..., Ka, 2) peak positions of the limb's first joint, grid units.
        xy_b: (..., Kb, 2) peak positions of its second joint, grid units.
        valid_a: (..., Ka) bool, real peaks of ``xy_a``.
        valid_b: (..., Kb) bool, real peaks of ``xy_b``.
        num_samples: points sampled along each candidate segment.
        min_dot: a sample supports the pair when the field's component along the segment exceeds this.
        min_fraction: fewest supporting samples (a fraction of ``num_samples``) for the pair to be a candidate.

    Returns:
        (..., Ka, Kb) scores; -inf where the pair is not a candidate.
    """
    lead, (h, w) = paf.shape[:-3], paf.shape[-2:]
    ka, kb = xy_a.shape[-2], xy_b.shape[-2]
    paf = paf.reshape(-1, 2, h, w)
    b = paf.shape[0]
    xy_a, xy_b = xy_a.reshape(b, ka, 2), xy_b.reshape(b, kb, 2)
    valid_a, valid_b = valid_a.reshape(b, ka), valid_b.reshape(b, kb)
    t = torch.linspace(0.0, 1.0, num_samples, device=paf.device, dtype=paf.dtype)
    pa, pb = xy_a[:, :, None, :], xy_b[:, None, :, :]  # (B, Ka, 1, 2), (B, 1, Kb, 2)
    d = pb - pa  # (B, Ka, Kb, 2)
    length = d.norm(dim=-1)  # (B, Ka, Kb)
    short = length < 1e-3
    unit = d / length.clamp_min(1e-3)[..., None]
    pts = pa[..., None, :] + t[:, None] * d[..., None, :]  # (B, Ka, Kb, S, 2) grid units
    if h == w:  # grid_sample's [-1, 1] coordinates (no host tensor)
        norm = pts * (2.0 / w) - 1.0
    else:
        norm = torch.stack((pts[..., 0] * (2.0 / w), pts[..., 1] * (2.0 / h)), -1) - 1.0
    field = F.grid_sample(paf, norm.flatten(1, 2), mode="bilinear", padding_mode="border", align_corners=False)
    field = field.view(b, 2, *pts.shape[1:4]).movedim(1, -1)  # (B, Ka, Kb, S, 2)
    dots = (field * unit[..., None, :]).sum(-1)  # (B, Ka, Kb, S)
    dots = torch.where(short[..., None], _magnitude(field), dots)
    prior = (0.5 * h / length.clamp_min(1e-3) - 1.0).clamp_max(0.0)
    score = dots.mean(-1) + torch.where(short, torch.zeros_like(prior), prior)
    ok = ((dots > min_dot).to(paf.dtype).mean(-1) >= min_fraction) & (score > 0)
    ok = ok & valid_a[:, :, None] & valid_b[:, None, :]
    return torch.where(ok, score, torch.full_like(score, float("-inf"))).view(*lead, ka, kb)


def greedy_match(score: torch.Tensor) -> torch.Tensor:
    """Greedy bipartite matching in decreasing score; -inf entries are never matched.

    Computed as min(N, M) rounds of mutually-best pairs (a row's best column whose best row is that row), which gives
    the same matching as scanning the pairs in sorted order when scores are distinct. A fixed number of rounds
    suffices (each round with a finite score left matches at least one pair, the first row holding the largest
    score) and needs no host synchronisation: rounds after the last match change nothing.

    Args:
        score: (..., N, M).

    Returns:
        (..., N) long: the matched column of each row, -1 if none.
    """
    *lead, n, m = score.shape
    s = score.reshape(-1, n, m).clone()
    b = s.shape[0]
    match = torch.full((b, n), -1, dtype=torch.long, device=score.device)
    rows = torch.arange(n, device=score.device)
    for _ in range(min(n, m)):
        best_val, best_col = s.max(2)  # (B, N)
        best_row = s.max(1).indices  # (B, M); = argmax(1) (first of ties), 15x faster on CPU
        mutual = (best_row.gather(1, best_col) == rows) & torch.isfinite(best_val)
        match = torch.where(mutual, best_col, match)
        s = s.masked_fill(mutual[:, :, None], float("-inf"))
        taken = torch.zeros((b, m + 1), dtype=torch.bool, device=score.device)
        taken.scatter_(1, torch.where(mutual, best_col, m), True)
        s = s.masked_fill(taken[:, None, :m], float("-inf"))
    return match.view(*lead, n)


class Assembly(NamedTuple):
    """Un-filtered people from :func:`assemble`: keypoints (B, Q, J, 2) grid units, confidence (B, Q, J)."""

    keypoints: torch.Tensor
    confidence: torch.Tensor


class _Tree(NamedTuple):
    """Index tables of a limb tree on one device (see :func:`_tree_tables`)."""

    parent: torch.Tensor  # (L,) long: limb l's first joint a_l
    child: torch.Tensor  # (L,) long: limb l's second joint b_l
    channels: torch.Tensor  # (2L,) long: PAF channels (x_l, y_l) of each limb
    earlier_sibling: torch.Tensor  # (L, L) bool: [l, m] = limb m comes before l and starts at the same joint
    joint_limb: torch.Tensor  # (J,) long: the limb ending at joint j; L for the root and joints of no limb
    joint_parent: torch.Tensor  # (J,) long: a of that limb; j itself where there is none
    is_root: torch.Tensor  # (J,) bool
    depth: int  # most limbs on a path down the tree (rounds of pointer propagation)


@functools.lru_cache(maxsize=32)
def _tree_tables(
    limbs: tuple[tuple[int, int], ...],
    paf_channels: tuple[tuple[int, int], ...],
    root: int,
    num_joints: int,
    device: torch.device,
) -> _Tree:
    """Check that ``limbs`` is a tree listed parents first and build its index tables once per device.

    Cached, so grouping itself copies nothing from the host.
    """
    joint_limb, depth = [len(limbs)] * num_joints, [0] * num_joints
    for i, (a, b) in enumerate(limbs):
        if b == root or joint_limb[b] != len(limbs):
            raise ValueError(f"limbs must form a tree rooted at joint {root}: joint {b} is reached twice (limb {i})")
        if a != root and joint_limb[a] > i:
            raise ValueError(f"limbs must list parents first: limb {i} = ({a}, {b}) comes before joint {a} is placed")
        joint_limb[b], depth[b] = i, depth[a] + 1
    if len(paf_channels) != len(limbs):
        raise ValueError(f"paf_channels must give one (x, y) pair per limb: {len(paf_channels)} for {len(limbs)}")
    parent = [a for a, _ in limbs]
    earlier = [[m < i and parent[m] == parent[i] for m in range(len(limbs))] for i in range(len(limbs))]
    joint_parent = [limbs[joint_limb[j]][0] if joint_limb[j] < len(limbs) else j for j in range(num_joints)]

    def long(x: list[int]) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.long, device=device)

    return _Tree(
        long(parent),
        long([b for _, b in limbs]),
        long([c for pair in paf_channels for c in pair]),
        torch.tensor(earlier, dtype=torch.bool, device=device).view(len(limbs), len(limbs)),
        long(joint_limb),
        long(joint_parent),
        torch.arange(num_joints, device=device) == root,
        max(depth),
    )


def assemble(
    peaks: Peaks,
    pafs: torch.Tensor,
    limbs: Sequence[tuple[int, int]],
    paf_channels: Sequence[tuple[int, int]],
    root: int,
    **score_kwargs: float,
) -> Assembly:
    """Match limbs and assemble people along a tree, batched over images, limbs and peaks.

    All limbs are scored and matched at once. The assembly then gives every matched peak the person of its parent
    peak and starts a new person at a matched parent peak that has none, numbering new people in (limb, peak) order
    as a limb-by-limb pass would; it runs as ``depth`` rounds of pointer propagation down the tree (4 for our
    skeleton), each vectorised over images, joints and peaks, with no host synchronisation.

    Args:
        peaks: :class:`Peaks` (B, J, K).
        pafs: (B, C, G, G).
        limbs: (a, b) joint pairs of a tree, parents before children (a is placed when limb (a, b) comes).
        paf_channels: (x channel, y channel) of each limb in ``pafs``.
        root: the tree's root joint; each of its peaks starts a person.
        **score_kwargs: passed to :func:`score_limb_candidates`.

    Returns:
        :class:`Assembly` with Q = K (1 + len(limbs)) person slots; empty slots have zero confidence. Slots 0..K-1
        are the root peaks, then new people in the order a limb-by-limb pass creates them.
    """
    b, j, k = peaks.valid.shape
    nl = len(limbs)
    q = k * (1 + nl)
    dev = pafs.device
    tree = _tree_tables(tuple(map(tuple, limbs)), tuple(map(tuple, paf_channels)), root, j, dev)
    # 1. every limb's candidates and greedy matching at once
    paf = pafs.index_select(1, tree.channels).view(b, nl, 2, *pafs.shape[2:])  # (B, L, 2, G, G)
    xy_a, xy_b = peaks.xy.index_select(1, tree.parent), peaks.xy.index_select(1, tree.child)  # (B, L, K, 2)
    va, vb = peaks.valid.index_select(1, tree.parent), peaks.valid.index_select(1, tree.child)  # (B, L, K)
    match = greedy_match(score_limb_candidates(paf, xy_a, xy_b, va, vb, **score_kwargs))  # (B, L, K) a -> b peak
    has = match >= 0
    ar = torch.arange(k, device=dev)
    # 2. back[b, l, m]: the a-peak matched to b-peak m of limb l (k: none); then per joint through its own limb
    back = torch.full((b, nl + 1, k + 1), k, dtype=torch.long, device=dev)  # row L: "no limb"; column k: dump
    back[:, :nl].scatter_(2, torch.where(has, match, k), ar.expand(b, nl, k))
    back = back[..., :k].index_select(1, tree.joint_limb)  # (B, J, K)
    is_child = back < k  # the peak hangs from a peak of its parent joint
    # 3. people start at root peaks (ids 0..K-1) and at matched parent peaks that have no person yet (ids K, ...):
    # a parent peak is a head at the first of its joint's limbs where it is matched (earlier siblings unmatched)
    owned = is_child | (tree.is_root[:, None] & peaks.valid)
    owned_a = owned.index_select(1, tree.parent)  # (B, L, K)
    sibling_had = (tree.earlier_sibling[None, :, :, None] & has[:, None, :, :]).any(2)  # (B, L, K)
    head = has & ~owned_a & ~sibling_had
    new_id = k + head.flatten(1).long().cumsum(1).view(b, nl, k) - 1  # (limb, peak) order
    pid = torch.where(owned & ~is_child, ar, -1).view(b, j * k)  # root peaks; (B, J K)
    head_at = torch.where(head, tree.parent[:, None] * k + ar, j * k)  # (B, L, K) flat (joint, peak); j k: dump
    pid = F.pad(pid, (0, 1)).scatter_(1, head_at.flatten(1), torch.where(head, new_id, -1).flatten(1))[:, : j * k]
    # 4. children take their parent peak's person, one tree level per round
    up = torch.where(is_child, tree.joint_parent[:, None] * k + back, torch.arange(j * k, device=dev).view(j, k))
    up, is_child = up.flatten(1), is_child.flatten(1)  # (B, J K)
    for _ in range(tree.depth):
        pid = torch.where(is_child, pid.gather(1, up), pid)
    owner = pid.view(b, j, k)
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
        keypoints: (B, Q, J, 2) pixels of Q candidate people.
        confidence: (B, Q, J), 0 = joint missing; a person's strength is its sum.
        root: root joint.
        fallback: two joints whose midpoint is the root when the root is missing.
        min_joints: fewest present joints of a kept person.
        max_people: Pmax, people kept per image.

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
        num_samples: points sampled along each candidate limb (``score_limb_candidates``).
        min_dot: PAF component along the limb above which a sample supports it.
        min_fraction: fewest supporting samples, as a fraction, for a limb candidate.

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
        pred_roots: (B, Pp, 2) predicted roots.
        pred_mask: (B, Pp) bool, real predictions.
        gt_roots: (B, Pg, 2) ground-truth roots, in the units of ``pred_roots``.
        gt_mask: (B, Pg) bool, real ground-truth people.
        max_distance: pairs farther apart (same units as the roots) are never matched.

    Returns:
        (B, Pg) long: the matched prediction of each ground-truth person, -1 if none.
    """
    dist = (gt_roots[:, :, None, :] - pred_roots[:, None, :, :]).norm(dim=-1)  # (B, Pg, Pp)
    ok = gt_mask[:, :, None] & pred_mask[:, None, :] & (dist <= max_distance)
    return greedy_match(torch.where(ok, -dist, torch.full_like(dist, float("-inf"))))
