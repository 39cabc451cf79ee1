"""The batched, device-side grouping (issue 15) equals the grouping it replaced, exactly.

``ref_*`` below is the implementation of ``lightning_mp3d/grouping.py`` before issue 15 (commit 4fa8fbd), kept here
only as the reference: limb-by-limb scoring and matching, a matching loop that stops early through a host
synchronisation, and a Python loop over the 14 limbs for the assembly. Every test compares people, joints,
confidences, masks and roots with ``torch.equal`` over rendered scenes (GT maps of ``synthetic_batch`` scenes, one
to four people, with occlusion), the rendered images through an untrained teacher, random smooth maps that fill all
K peak slots, quantised maps with ties, other grids and peak counts, and the OpenPose COCO tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from lightning_mp3d.grouping import (
    GroupedPeople,
    Peaks,
    assemble,
    find_peaks,
    greedy_match,
    group_people,
    select_people,
)
from lightning_mp3d.models.teacher import COCO_LIMBS, COCO_NECK, COCO_PAF_CHANNELS, COCO_TREE, EmbeddedTeacher
from lightning_mp3d.skeleton import JOINT_INDEX, LIMBS, NUM_JOINTS, NUM_LIMBS, ROOT
from lightning_mp3d.synth.batches import synthetic_batch
from lightning_mp3d.synth.maps import render_maps

# ---------------------------------------------------------------------------------------------------------------
# reference: the grouping before issue 15, verbatim but for the ref_ names


def ref_find_peaks(
    heatmaps: torch.Tensor, *, threshold: float = 0.1, max_peaks: int = 16, refine: bool = True
) -> Peaks:
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


def ref_score_limb_candidates(
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


def ref_greedy_match(score: torch.Tensor) -> torch.Tensor:
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


class _RefAssembly(NamedTuple):
    """Un-filtered people from :func:`assemble`: keypoints (B, Q, J, 2) grid units, confidence (B, Q, J)."""

    keypoints: torch.Tensor
    confidence: torch.Tensor


def ref_assemble(
    peaks: Peaks,
    pafs: torch.Tensor,
    limbs: Sequence[tuple[int, int]],
    paf_channels: Sequence[tuple[int, int]],
    root: int,
    **score_kwargs: float,
) -> _RefAssembly:
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
        score = ref_score_limb_candidates(
            paf, peaks.xy[:, ja], peaks.xy[:, jb], peaks.valid[:, ja], peaks.valid[:, jb], **score_kwargs
        )
        match = ref_greedy_match(score)  # (B, K) a-peak -> b-peak
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
    return _RefAssembly(keypoints[:, :q], confidence[:, :q])


def ref_group_people(
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
    """``grouping.group_people`` as it was before the batched rewrite (commit 4fa8fbd): the equality reference."""
    if heatmaps.ndim != 4 or heatmaps.shape[1] != NUM_JOINTS:
        raise ValueError(f"heatmaps must be (B, {NUM_JOINTS}, G, G), got {tuple(heatmaps.shape)}")
    if pafs.shape != (heatmaps.shape[0], 2 * NUM_LIMBS, *heatmaps.shape[2:]):
        raise ValueError(f"pafs must be (B, {2 * NUM_LIMBS}, G, G) like heatmaps, got {tuple(pafs.shape)}")
    grid = heatmaps.shape[-1]
    peaks = ref_find_peaks(heatmaps, threshold=peak_threshold, max_peaks=max_peaks)
    channels = [(2 * k, 2 * k + 1) for k in range(NUM_LIMBS)]
    kw = {"num_samples": num_samples, "min_dot": min_dot, "min_fraction": min_fraction}
    asm = ref_assemble(peaks, pafs, LIMBS, channels, ROOT, **kw)
    fallback = (JOINT_INDEX["r_hip"], JOINT_INDEX["l_hip"])
    return select_people(  # unchanged by the batched rewrite: the package's own
        asm.keypoints * (image_size / grid),
        asm.confidence,
        root=ROOT,
        fallback=fallback,
        min_joints=min_joints,
        max_people=max_people,
    )


# ---------------------------------------------------------------------------------------------------------------
# inputs


def _assert_same_people(got: GroupedPeople, want: GroupedPeople, what: str) -> None:
    for name in GroupedPeople._fields:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {name} {a.dtype} {tuple(a.shape)} vs {b.dtype}"
        assert torch.equal(a, b), f"{what}: {name} differs at {torch.nonzero(a != b)[:5].tolist()}"


def _gt_maps(batch: dict[str, torch.Tensor], visibility: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    maps = render_maps(batch["joints_2d"], batch["mask"], visibility=batch["visibility"] if visibility else None)
    return maps[:, :NUM_JOINTS], maps[:, NUM_JOINTS:]


def _random_maps(b: int, j: int, c: int, grid: int, generator: torch.Generator, levels: int = 0):
    """Smooth random heatmaps in [0, 1] with many peaks (all K slots used) and random smooth fields."""
    heat = F.avg_pool2d(torch.rand(b, j, grid + 2, grid + 2, generator=generator), 3, 1)  # (B, J, G, G)
    heat = (heat - heat.amin((2, 3), keepdim=True)) / (heat.amax((2, 3), keepdim=True) - heat.amin((2, 3), True))
    if levels:  # plateaus and ties: equal peak values and equal line integrals
        heat = (heat * levels).round() / levels
    paf = F.avg_pool2d(torch.rand(b, c, grid + 4, grid + 4, generator=generator) * 2 - 1, 5, 1) * 3
    paf = paf.clamp(-1, 1)
    if levels:
        paf = (paf * levels).round() / levels
    return heat, paf


def _group_both(heat: torch.Tensor, paf: torch.Tensor, what: str, **kw: float) -> GroupedPeople:
    got = group_people(heat, paf, **kw)
    _assert_same_people(got, ref_group_people(heat, paf, **kw), what)
    return got


# ---------------------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("style", ["source", "target"])
def test_batched_grouping_equals_reference_on_rendered_scenes(style):
    found = 0
    for seed in range(6):
        batch = synthetic_batch(16, style, torch.Generator().manual_seed(seed))
        heat, paf = _gt_maps(batch, visibility=seed % 2 == 0)
        people = _group_both(heat, paf, f"{style} seed {seed}")
        found += int(people.mask.sum())
    assert found > 6 * 16  # the scenes do hold people (1-4 each)


def test_batched_grouping_equals_reference_on_crowded_scenes_with_noise(generator):
    batch = synthetic_batch(16, "target", generator, min_people=4, max_people=4)
    heat, paf = _gt_maps(batch)
    for noise in (0.0, 0.05, 0.2):
        h = (heat + noise * torch.rand(heat.shape, generator=generator)).clamp(0, 1)
        p = paf + noise * (2 * torch.rand(paf.shape, generator=generator) - 1)
        for kw in ({}, {"max_people": 3, "min_joints": 5}, {"peak_threshold": 0.3, "max_peaks": 4}):
            _group_both(h, p, f"noise {noise} {kw}", **kw)


def test_batched_grouping_equals_reference_on_random_maps(generator):
    for trial in range(8):
        heat, paf = _random_maps(8, NUM_JOINTS, 2 * NUM_LIMBS, 28, generator)
        kw = [{}, {"max_peaks": 5}, {"peak_threshold": 0.5}, {"min_fraction": 0.5, "min_dot": 0.0}][trial % 4]
        people = _group_both(heat, paf, f"random trial {trial} {kw}", **kw)
        assert people.mask.any()


def test_batched_grouping_equals_reference_with_ties(generator):
    for levels in (3, 5, 10):
        heat, paf = _random_maps(8, NUM_JOINTS, 2 * NUM_LIMBS, 28, generator, levels=levels)
        _group_both(heat, paf, f"quantised to {levels} levels")
    heat, paf = _random_maps(8, NUM_JOINTS, 2 * NUM_LIMBS, 28, generator)
    _group_both(heat - 0.6, paf, "negative maps (the grid's zero border matters)", peak_threshold=-0.5)
    heat, paf = _random_maps(4, NUM_JOINTS, 2 * NUM_LIMBS, 40, generator)
    _group_both(heat[..., 6:-6, :], paf[..., 6:-6, :], "a 28 x 40 grid")
    _group_both(torch.zeros(2, 15, 28, 28), torch.zeros(2, 28, 28, 28), "empty")
    _group_both(torch.ones(2, 15, 28, 28), torch.ones(2, 28, 28, 28), "flat")


@pytest.mark.parametrize("grid,max_peaks", [(14, 16), (56, 24), (28, 1)])
def test_batched_grouping_equals_reference_on_other_grids(grid, max_peaks, generator):
    batch = synthetic_batch(8, "target", generator)
    maps = render_maps(batch["joints_2d"], batch["mask"], visibility=batch["visibility"], grid_size=grid)
    _group_both(maps[:, :NUM_JOINTS], maps[:, NUM_JOINTS:], f"grid {grid}", max_peaks=max_peaks)
    heat, paf = _random_maps(4, NUM_JOINTS, 2 * NUM_LIMBS, grid, generator)
    _group_both(heat, paf, f"random grid {grid}", max_peaks=max_peaks)


def test_batched_grouping_equals_reference_through_an_untrained_teacher(generator):
    torch.manual_seed(0)
    teacher = EmbeddedTeacher(width=0.125).freeze()
    images = synthetic_batch(8, "target", generator)["image"]
    with torch.no_grad():
        heat, paf = teacher(images)
    _group_both(heat, paf, "untrained teacher")
    # rescaled to [0, 1] per map so that its (random) maps have peaks above the threshold
    lo, hi = heat.amin((2, 3), keepdim=True), heat.amax((2, 3), keepdim=True)
    heat = (heat - lo) / (hi - lo).clamp_min(1e-12)
    paf = paf / paf.abs().amax((2, 3), keepdim=True).clamp_min(1e-12)
    assert _group_both(heat, paf, "untrained teacher, rescaled").mask.any()


def test_batched_assembly_equals_reference_on_the_openpose_coco_tree(generator):
    limbs, channels = COCO_LIMBS[:COCO_TREE], COCO_PAF_CHANNELS[:COCO_TREE]
    for trial in range(4):
        heat, paf = _random_maps(4, 18, 38, 28, generator, levels=5 if trial == 3 else 0)
        peaks = find_peaks(heat, max_peaks=8)
        got = assemble(peaks, paf, limbs, channels, COCO_NECK)
        want = ref_assemble(ref_find_peaks(heat, max_peaks=8), paf, limbs, channels, COCO_NECK)
        assert torch.equal(got.keypoints, want.keypoints) and torch.equal(got.confidence, want.confidence)
        assert (got.confidence > 0).any()


def test_greedy_match_equals_the_early_stopping_reference(generator):
    score = torch.rand(64, 9, 7, generator=generator)
    score[torch.rand(64, 9, 7, generator=generator) < 0.5] = float("-inf")
    score[:8] = (score[:8] * 3).round()  # ties
    assert torch.equal(greedy_match(score), ref_greedy_match(score))
    assert torch.equal(greedy_match(score.view(8, 8, 9, 7)), ref_greedy_match(score).view(8, 8, 9))


def test_assemble_rejects_limbs_that_are_not_a_tree_listed_parents_first():
    peaks = find_peaks(torch.rand(1, NUM_JOINTS, 28, 28))
    pafs = torch.zeros(1, 2 * NUM_LIMBS, 28, 28)
    channels = [(2 * k, 2 * k + 1) for k in range(NUM_LIMBS)]
    with pytest.raises(ValueError, match="parents first"):
        assemble(peaks, pafs, LIMBS[::-1], channels, ROOT)
    with pytest.raises(ValueError, match="tree"):
        assemble(peaks, pafs, (*LIMBS[:-1], (0, JOINT_INDEX["neck"])), channels, ROOT)


def test_grouping_copies_nothing_from_the_host_after_the_first_call(monkeypatch):
    """No host synchronisation inside: no .item()/.tolist()/bool() on tensors, no bool-mask indexing and no new host
    tensors."""
    heat, paf = _random_maps(2, NUM_JOINTS, 2 * NUM_LIMBS, 28, torch.Generator().manual_seed(1))
    group_people(heat, paf)  # builds the cached index tables of the tree
    calls = []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    for name in ("__getitem__", "__setitem__"):  # a bool-mask index has a data-dependent shape (a hidden nonzero)
        original = getattr(torch.Tensor, name)

        def index_spy(self, index, *a, _name=name, _original=original):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts):
                calls.append(f"{_name} with a bool mask")
            return _original(self, index, *a)

        monkeypatch.setattr(torch.Tensor, name, index_spy)
    real_tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **kw: calls.append("torch.tensor") or real_tensor(*a, **kw))
    group_people(heat, paf)
    assert calls == []
    ref_group_people(heat, paf)  # the spies do see the old grouping's host synchronisation ...
    heat[heat > 2.0] = 0.0  # ... and a bool mask
    assert "__bool__" in calls and "__setitem__ with a bool mask" in calls
