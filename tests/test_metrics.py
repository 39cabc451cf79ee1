"""Metrics: hand-computed cases, the official MuPoTS protocol against an independent NumPy port, batch accumulation."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from lightning_mp3d import metrics as M
from lightning_mp3d.metrics import functional as F
from lightning_mp3d.skeleton import JOINT_GROUPS, MUPOTS17_TO_OURS
from tests.helpers import project_people as _project
from tests.helpers import random_people_batch as _random_batch
from tests.helpers import random_person as _person


def _close(actual: torch.Tensor, expected, rtol: float = 1e-6, atol: float = 1e-12) -> None:
    """``torch.testing.assert_close`` against a number or list (pytest.approx's default tolerances; 0, 0 = exact)."""
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def _frame(preds: list[torch.Tensor], gts: list[torch.Tensor], g_pad: int | None = None, p_pad: int | None = None):
    """One frame (B = 1) from lists of (15, 3) poses; 2D by projection: a PeopleBatch without sequence."""
    P, G = p_pad or max(len(preds), 1), g_pad or len(gts)
    pp = torch.zeros(1, P, 15, 3, dtype=torch.float64)
    gp = torch.zeros(1, G, 15, 3, dtype=torch.float64)
    pm = torch.zeros(1, P, dtype=torch.bool)
    gm = torch.zeros(1, G, dtype=torch.bool)
    for i, p in enumerate(preds):
        pp[0, i], pm[0, i] = p, True
    for i, p in enumerate(gts):
        gp[0, i], gm[0, i] = p, True
    return M.PeopleBatch(pp, _project(pp) * pm[..., None, None], pm, gp, _project(gp), gm)


def test_pck3d_149mm_is_correct_151mm_is_not():
    gt = _person()
    for off, expect in ((149.0, 1.0), (151.0, 0.0)):
        pred = gt.clone()
        pred[7, 0] += off  # right wrist, plain protocol (no bone rescaling)
        r = M.pck3d(_frame([pred], [gt]), protocol="plain")
        _close(r.per_joint_all[7], expect, 0, 0)
        _close(r.pck_all, (13 + expect) / 14)
        _close(r.per_group_all["wrists"], (1 + expect) / 2)


def test_absolute_threshold_250_vs_150():
    gt = _person()
    pred = gt + torch.tensor([0.0, 0.0, 200.0], dtype=torch.float64)  # 200 mm deeper: 2D moves < 40 px
    frame = _frame([pred], [gt])
    _close(M.pck3d(frame, mode="absolute", threshold=250.0, protocol="plain").pck_all, 1.0, 0, 0)
    _close(M.pck3d(frame, mode="absolute", threshold=150.0).pck_all, 0.0, 0, 0)
    _close(M.pck3d(frame, mode="relative").pck_all, 1.0, 0, 0)


def test_unmatched_gt_counts_zero_in_all_and_is_excluded_in_matched():
    a, b = _person(seed=1), _person((900.0, 0.0, 4000.0), seed=2)
    r = M.pck3d(_frame([a], [a, b]))
    _close(r.pck_all, 0.5)
    _close(r.pck_matched, 1.0, 0, 0)
    _close(r.detection_rate, 0.5, 0, 0)
    e = M.mpjpe(_frame([a + 5.0], [a, b]), root_align=False)
    _close(e.mpjpe, 5.0 * 3**0.5)  # only the matched person counts


def test_matching_is_greedy_over_gt_in_order_and_uses_each_prediction_once():
    gt_2d = torch.zeros(1, 2, 15, 2)
    gt_2d[0, 1] += 10.0  # GT 1 sits 10 px away from GT 0
    pred_2d = torch.zeros(1, 2, 15, 2) + 100.0
    pred_2d[0, 0] = gt_2d[0, 1] + 1.0  # prediction 0 is nearest to GT 1 ...
    pred_2d[0, 1] = 1000.0  # ... and prediction 1 matches nothing
    pm, gm = torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)
    m = M.match_people(pred_2d, pm, gt_2d, gm, threshold_px=40.0)
    torch.testing.assert_close(m.index, torch.tensor([[0, -1]]))  # GT 0 comes first and takes it; GT 1 stays unmatched
    torch.testing.assert_close(m.score, torch.tensor([[13, 0]]))


def test_matching_box_is_strict_and_per_axis():
    gt_2d = torch.full((1, 1, 15, 2), 500.0)
    for dx, dy, matched in ((39.9, 39.9, True), (40.0, 0.0, False), (0.0, 40.0, False)):
        pred = gt_2d + torch.tensor([dx, dy])
        m = M.match_people(pred, torch.ones(1, 1, dtype=torch.bool), gt_2d, torch.ones(1, 1, dtype=torch.bool))
        assert bool(m.matched[0, 0]) is matched


def test_matching_ignores_zero_joints_head_and_pelvis():
    gt_2d = torch.full((1, 1, 15, 2), 5.0)
    pred = torch.zeros(1, 1, 15, 2)  # (0, 0) = missing in the official script, though within 40 px
    ones = torch.ones(1, 1, dtype=torch.bool)
    assert not M.match_people(pred, ones, gt_2d, ones).matched.any()
    pred = torch.full((1, 1, 15, 2), 999.0)
    pred[0, 0, [0, 2]] = 5.0  # pelvis and head top do not vote
    assert not M.match_people(pred, ones, gt_2d, ones).matched.any()


def test_official_protocol_costs_nothing_on_exact_gt_and_ignores_bone_scale():
    gt = torch.stack([_person(seed=s) for s in range(4)])  # (4, 15, 3)
    assert F.pose_errors_3d(gt, gt).abs().max().item() < 1e-6  # the official 1e-8 mm guard in the bone norm
    scaled = (gt - gt[:, :1]) * 1.3 + gt[:, :1] + 250.0  # wrong size and root: relative + rescaling undo both
    assert F.pose_errors_3d(scaled, gt).abs().max().item() < 1e-6  # the official 1e-8 mm guard in the bone norm
    assert F.pose_errors_3d(scaled, gt, protocol="plain").max().item() > 50.0


def test_completion_choice_versus_real_spine():
    """What the 17-joint completion costs: 0 with ours; a completed prediction against a real off-line spine
    would stretch the pelvis->neck path by |s - p| + |n - s| - |n - p| (here 28.3 mm for a 60 mm spine offset)."""
    gt = _person()
    pred17, gt17 = F.complete_to_mupots17(gt), F.complete_to_mupots17(gt)
    real = gt17.clone()
    real[15] += torch.tensor([60.0, 0.0, 0.0], dtype=torch.float64) * 1  # a real spine, off the pelvis-neck line
    ours = F.rescale_bones_to_gt(pred17, gt17)
    other = F.rescale_bones_to_gt(pred17, real)
    assert (ours - gt17).norm(dim=-1).max().item() < 1e-6  # the official 1e-8 mm guard in the bone norm
    trunk = (gt17[1] - gt17[14]).norm()
    stretch = (real[15] - real[14]).norm() + (real[1] - real[15]).norm() - trunk
    _close((other[1] - gt17[1]).norm(), stretch.item())
    assert stretch.item() > 1.0


# ------------------------------------------------------------------ independent NumPy port of the official script
def _np_match(gt2d, pred2d, thr):
    joints = np.arange(1, 14)
    pair = -np.ones(len(gt2d), dtype=int)
    used = np.zeros(len(pred2d), dtype=bool)
    for i in range(len(gt2d)):
        if len(pred2d) == 0:
            break
        close = np.all(np.abs(gt2d[i, joints] - pred2d[:, joints]) < thr, axis=2)
        vis = np.any(pred2d[:, joints] != 0, axis=2)
        s = np.sum(close & vis, axis=1)
        s[used] = 0
        j = int(np.argmax(s))
        if s[j] > 0:
            pair[i], used[j] = j, True
    return pair


def _np_rescale(pred, gt):
    par = np.array([2, 16, 2, 3, 4, 2, 6, 7, 15, 9, 10, 15, 12, 13, 15, 15, 2]) - 1
    order = np.array([16, 2, 1, 17, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]) - 1
    out = pred.copy()
    for j in order:
        gl = np.linalg.norm(gt[j] - gt[par[j]])
        b = pred[j] - pred[par[j]]
        out[j] = out[par[j]] + b * gl / (np.linalg.norm(b) + 1e-8)
    return out


def _np_to17(p15):
    p = np.zeros((17, 3))
    p[list(MUPOTS17_TO_OURS)] = p15
    p[15] = (p[14] + p[1]) / 2
    p[16] = (p[1] + p[0]) / 2
    return p


def _np_eval(frames, num_seq, thr_px=40.0):
    """frames: list of (seq, pred3d (P,15,3), pred2d (P,15,2), gt3d (G,15,3), gt2d (G,15,2)) -> per-seq pck/auc."""
    errs = {s: [] for s in range(num_seq)}
    matched = {s: [] for s in range(num_seq)}
    for seq, p3, p2, g3, g2 in frames:
        pair = _np_match(g2, p2, thr_px)
        for k in range(len(g3)):
            gt17 = _np_to17(g3[k] - g3[k, 0])
            if pair[k] >= 0:
                pr17 = _np_to17(p3[pair[k]] - p3[pair[k], 0])
                e = np.linalg.norm(_np_rescale(pr17, gt17) - gt17, axis=1)[:14]  # MuPoTS 0..13
            else:
                e = np.full(14, 1e5)
            errs[seq].append(e)
            matched[seq].append(pair[k] >= 0)
    pck, pck_m, auc = [], [], []
    for s in range(num_seq):
        if not errs[s]:
            continue
        e, m = np.array(errs[s]), np.array(matched[s])
        pck.append(np.mean(e < 150))
        auc.append(np.mean([np.mean(e < t) for t in np.arange(0, 151, 5)]))
        if m.any():
            pck_m.append(np.mean(e[m] < 150))
    return np.mean(pck), np.mean(pck_m), np.mean(auc)


def test_pck3d_matches_independent_numpy_port_of_official_script():
    batch = _random_batch(0, b=12)
    pred, pred_2d, pred_mask, gt, gt_2d, gt_mask, seq = batch
    frames = [
        (
            int(seq[i]),
            pred[i][pred_mask[i]].numpy(),
            pred_2d[i][pred_mask[i]].numpy(),
            gt[i][gt_mask[i]].numpy(),
            gt_2d[i][gt_mask[i]].numpy(),
        )
        for i in range(len(seq))
    ]
    ref_pck, ref_pck_m, ref_auc = _np_eval(frames, 3)
    r = M.pck3d(M.PeopleBatch(*batch), num_sequences=3)
    assert 0.1 < ref_pck < 0.99  # a non-trivial case
    _close(r.pck_all, ref_pck, rtol=0)
    _close(r.pck_matched, ref_pck_m, rtol=0)
    _close(r.auc_all, ref_auc, rtol=0)


def test_accumulating_batches_equals_one_call_on_concatenated_data():
    b1, b2 = _random_batch(1, b=5), _random_batch(2, b=7)
    cat = [torch.cat((x, y)) for x, y in zip(b1, b2)]
    for cls, kw in ((M.PCK3D, {}), (M.MPJPE, {}), (M.PAMPJPE, {}), (M.PCK2D, {}), (M.BoxIoU, {})):
        acc, one = cls(num_sequences=3, **kw), cls(num_sequences=3, **kw)
        acc.update(M.PeopleBatch(*b1))
        acc.update(M.PeopleBatch(*b2))
        one.update(M.PeopleBatch(*cat))
        for x, y in zip(acc.compute(), one.compute()):
            if isinstance(x, dict):
                for k in x:
                    torch.testing.assert_close(x[k], y[k], equal_nan=True)
            else:
                torch.testing.assert_close(x, y, equal_nan=True)


def test_mpjpe_and_pa_mpjpe_against_numpy():
    pred, pred_2d, pred_mask, gt, gt_2d, gt_mask, seq = _random_batch(3)
    m = M.match_people(pred_2d, pred_mask, gt_2d, gt_mask)
    pg = F.gather_matched(pred, m).numpy()
    w = (gt_mask & m.matched).numpy()
    g = gt.numpy()
    e = np.linalg.norm((pg - pg[:, :, :1]) - (g - g[:, :, :1]), axis=-1)[w]
    people = M.PeopleBatch(pred, pred_2d, pred_mask, gt, gt_2d, gt_mask)
    _close(M.mpjpe(people).mpjpe, e.mean())
    pa = []
    for x, y in zip(pg[w], g[w]):  # Umeyama in NumPy
        xc, yc = x - x.mean(0), y - y.mean(0)
        u, s, vt = np.linalg.svd(yc.T @ xc)
        d = np.sign(np.linalg.det(u @ vt))
        r = u @ np.diag([1, 1, d]) @ vt
        sc = (s * [1, 1, d]).sum() / (xc**2).sum()
        pa.append(np.linalg.norm(sc * xc @ r.T - yc, axis=-1).mean())
    _close(M.pa_mpjpe(people).mpjpe, np.mean(pa))


def test_pa_mpjpe_is_zero_for_a_similar_pose():
    gt = _person()
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))[0]
    rot = rot * torch.sign(torch.linalg.det(rot))
    pred = 0.8 * (gt - gt[0]) @ rot.T + gt[0]
    frame = _frame([pred], [gt])
    frame = frame._replace(pred_2d=frame.gt_2d.clone())  # match on the GT's 2D
    assert M.pa_mpjpe(frame).mpjpe.item() < 1e-6
    assert M.mpjpe(frame).mpjpe.item() > 10.0


def test_pck2d_mpjpe2d_and_box_iou_by_hand():
    gt_2d = torch.zeros(1, 1, 15, 2)
    gt_2d[0, 0, :, 0] = torch.linspace(0, 100, 15)
    gt_2d[0, 0, :, 1] = torch.linspace(0, 100, 15)
    pred = gt_2d.clone()
    pred[0, 0, 1, 0] += 24.9
    pred[0, 0, 3, 0] += 25.1
    ones = torch.ones(1, 1, dtype=torch.bool)
    r = M.pck2d(M.PeopleBatch(None, pred, ones, None, gt_2d, ones))
    _close(r.pck_all, 14 / 15)
    _close(r.mpjpe_2d, (24.9 + 25.1) / 15, rtol=1e-5)
    shifted = gt_2d + torch.tensor([50.0, 0.0])  # box [50, 150] x [0, 100] vs [0, 100] x [0, 100]: IoU 1/3
    by_index = M.MatchSpec("index")
    _close(M.box_iou(M.PeopleBatch(None, shifted, ones, None, gt_2d, ones), match=by_index).iou_matched, 1 / 3)
    two = torch.ones(1, 2, dtype=torch.bool)
    gt2 = torch.cat((gt_2d, gt_2d + 1000.0), 1)
    b = M.box_iou(M.PeopleBatch(None, shifted, ones, None, gt2, two), match=by_index)  # 50 px: beyond the 40 px box
    _close(torch.stack((b.iou_matched, b.iou_all)), [1 / 3, 1 / 6])


def test_ap_root_by_hand():
    gt = torch.tensor([[[0.0, 0.0, 4000.0], [1000.0, 0.0, 4000.0]]])
    pred = torch.tensor([[[10.0, 0.0, 4000.0], [5000.0, 0.0, 4000.0], [1100.0, 0.0, 4000.0]]])
    scores = torch.tensor([[0.9, 0.8, 0.7]])  # TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    roots = M.RootsBatch(pred, scores, torch.ones(1, 3, dtype=torch.bool), gt, torch.ones(1, 2, dtype=torch.bool))
    ap = M.ap_root(roots)
    _close(ap, 0.5 * 1.0 + 0.5 * 2 / 3)
    metric = M.APRoot()
    metric.update(roots)
    _close(metric.compute(), ap.item())
    _close(M.ap_root(roots, threshold_mm=5.0), 0.0)  # the 10 mm and 100 mm hits are misses at 5 mm


def test_ap_root_accumulated_batches_equal_one_call():
    pred, _, pred_mask, gt, _, gt_mask, _ = _random_batch(6)
    scores = torch.rand(pred.shape[:2], generator=torch.Generator().manual_seed(1))
    roots = M.RootsBatch(pred[:, :, 0], scores, pred_mask, gt[:, :, 0], gt_mask)
    metric = M.APRoot(threshold_mm=100.0)  # 60 mm-per-axis jitter: a mix of hits and misses
    for half in (slice(0, 3), slice(3, 6)):
        metric.update(M.RootsBatch(*(x[half] for x in roots)))
    ap = M.ap_root(roots, threshold_mm=100.0)
    assert 0.0 < ap.item() < 1.0
    _close(metric.compute(), ap.item())


def test_ap_root_bad_shapes_raise_value_errors_naming_the_input():
    one, two = torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)
    roots = M.RootsBatch(torch.zeros(1, 3, 3), torch.zeros(1, 3), one, torch.zeros(1, 2, 3), two)
    with pytest.raises(ValueError, match="pred_roots"):
        M.ap_root(roots._replace(pred_roots=torch.zeros(1, 3, 2)))
    with pytest.raises(ValueError, match="gt_mask"):
        M.ap_root(roots._replace(gt_mask=torch.ones(1, 3, dtype=torch.bool)))


def test_per_sequence_headline_is_mean_of_sequence_pcks():
    a, b = _person(seed=3), _person((900.0, 0.0, 4000.0), seed=4)
    f1, f2 = _frame([a], [a, b]), _frame([a], [a, b])
    cat = [torch.cat((x, y)) for x, y in zip(f1[:6], f2[:6])]
    cat[1][1] = 0.0  # frame 2 has no predictions
    cat[2][1] = False
    r = M.pck3d(M.PeopleBatch(*cat, torch.tensor([0, 2])), num_sequences=3)
    _close(r.per_sequence_all, [0.5, float("nan"), 0.0], 0, 0)  # sequence 1 has no GT: NaN
    _close(r.pck_all, 0.25)  # sequences without GT are left out of the mean
    assert set(r.per_group_all) == set(JOINT_GROUPS) - {"pelvis"}


def test_bad_inputs_raise_value_errors_naming_the_input():
    pred, pred_2d, pred_mask, gt, gt_2d, gt_mask, seq = _random_batch(4)
    with pytest.raises(ValueError, match="pred_poses"):
        M.pck3d(M.PeopleBatch(pred[..., :2], pred_2d, pred_mask, gt, gt_2d, gt_mask))
    with pytest.raises(ValueError, match="gt_mask"):
        M.pck3d(M.PeopleBatch(pred, pred_2d, pred_mask, gt, gt_2d, gt_mask.float()))
    with pytest.raises(ValueError, match="sequence"):
        M.pck3d(M.PeopleBatch(pred, pred_2d, pred_mask, gt, gt_2d, gt_mask, seq + 5), num_sequences=3)
    with pytest.raises(ValueError, match="protocol"):
        M.PCK3D(protocol="nope")
    with pytest.raises(ValueError, match="matching"):
        M.MPJPE(match=M.MatchSpec("nope"))


def test_metrics_package_does_not_import_lightning():
    code = "import sys, lightning_mp3d.metrics; assert not {'lightning', 'pytorch_lightning'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluation_feeds_univ_annot3_to_the_official_pck3d_only():
    from lightning_mp3d.evaluation import build_metrics

    metrics = build_metrics(num_sequences=1, match=M.OFFICIAL_MATCHING)
    univ = {name for name, metric in metrics.items() if metric.gt_variant == "univ_annot3"}
    assert univ == {"pck3d_rel", "pck3d_abs_150"}  # the two that rescale bones (protocol="official")
    assert {m.gt_variant for m in metrics.values()} == {"univ_annot3", "annot3"}


def test_match_spec_and_people_batch_name_bad_inputs():
    with pytest.raises(ValueError, match="threshold_px"):
        M.MatchSpec(threshold_px=0.0)
    pred, pred_2d, pred_mask, gt, gt_2d, gt_mask, _ = _random_batch(5)
    with pytest.raises(ValueError, match="gt_poses"):
        M.mpjpe(M.PeopleBatch(pred, pred_2d, pred_mask, None, gt_2d, gt_mask))
    two_d_only = M.pck2d(M.PeopleBatch(None, pred_2d, pred_mask, None, gt_2d, gt_mask))  # 3D fields ignored
    full = M.pck2d(M.PeopleBatch(pred, pred_2d, pred_mask, gt, gt_2d, gt_mask))
    torch.testing.assert_close(two_d_only.pck_all, full.pck_all, rtol=0, atol=0)
