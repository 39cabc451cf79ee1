"""What makes the student learnable and what shows it: reconstruction terms, diagnostics and reference predictors."""

import math

import pytest
import torch

from lightning_mp3d.baselines import KNNLifting, lifting_features, mean_pose
from lightning_mp3d.datamodules.dsyn import make_dsyn_batch
from lightning_mp3d.geometry import (
    Intrinsics,
    euler_to_sincos,
    forward_kinematics,
    project,
    rotate,
    to_local,
    translate,
)
from lightning_mp3d.losses.cross_modal import (
    RECON_TERMS,
    TERM_KEYS,
    reconstruction_loss,
    reconstruction_terms,
    supervised_3d_loss,
)
from lightning_mp3d.metrics.diagnostics import pose_diagnostics, rotation_angle_deg
from lightning_mp3d.models.scene_decoder import DecodedScene


def _batch():
    return make_dsyn_batch(4, torch.Generator().manual_seed(3))


def _decoded(batch, canonical=None, rotation=None, depth=None):
    """A DecodedScene built the way M builds it, from (possibly altered) GT components."""
    k = Intrinsics.for_image(224)
    canonical = batch["canonical"] if canonical is None else canonical
    rotation = batch["rotation"] if rotation is None else rotation
    depth = batch["depth"].clamp_min(1.0) if depth is None else depth
    poses = translate(rotate(canonical, rotation), batch["roots_px"], depth, k)
    zeros = torch.zeros(batch["mask"].shape)
    return DecodedScene(
        poses, project(poses, k), batch["mask"], canonical, zeros[..., None].expand(-1, -1, 32), rotation, depth,
        batch["roots_px"], zeros,
    )  # fmt: skip


def test_every_reconstruction_term_is_zero_at_the_ground_truth():
    b = _batch()
    terms = reconstruction_terms(_decoded(b), b, dict.fromkeys(RECON_TERMS, 1.0))
    assert set(terms) == set(RECON_TERMS)
    for name, value in terms.items():
        assert float(value) < 1e-2, name  # mm / px / log / matrix units: float32 rounding only


def test_terms_see_their_own_component():
    b = _batch()
    far = _decoded(b, depth=b["depth"].clamp_min(1.0) * 1.5)  # same pose, 50% deeper
    t = reconstruction_terms(far, b, dict.fromkeys(RECON_TERMS, 1.0))
    assert t["log_depth"] == pytest.approx(math.log(1.5), rel=1e-4)
    assert t["recon"] > 100 and t["canonical"] < 1e-2 and t["rotation"] < 1e-5 and t["recon_rel"] < 1e-2
    yaw = euler_to_sincos(torch.tensor([math.pi / 2, 0.0, 0.0])).expand_as(b["rotation"])
    turned = _decoded(b, rotation=yaw)
    t = reconstruction_terms(turned, b, dict.fromkeys(RECON_TERMS, 1.0))
    assert t["canonical"] < 1e-2 and t["log_depth"] < 1e-5 and t["rotation"] > 0.1 and t["recon_rel"] > 10


def test_terms_weights_scale_and_zero_weights_are_skipped():
    b = _batch()
    pred = _decoded(b, depth=b["depth"].clamp_min(1.0) * 2)
    one = reconstruction_terms(pred, b, {"recon": 1.0})
    assert torch.equal(one["recon"], reconstruction_loss(pred.poses, b["poses"], b["mask"]))  # the paper's L_recon
    three = reconstruction_terms(pred, b, {"recon": 3.0, "reproj": 0.0})
    assert set(three) == {"recon"} and torch.allclose(three["recon"], 3 * one["recon"])
    with pytest.raises(ValueError, match="unknown reconstruction terms"):
        reconstruction_terms(pred, b, {"mpjpe": 1.0})


def test_full_supervision_uses_the_reconstruction_terms_and_names_missing_gt():
    b = _batch()
    pred = _decoded(b, depth=b["depth"].clamp_min(1.0) * 2)
    assert set(TERM_KEYS) == set(RECON_TERMS)
    # the paper's L_3D = |P_hat - P_gt| is the recon term alone
    assert torch.equal(
        supervised_3d_loss(pred, b, {"recon": 1.0}), reconstruction_loss(pred.poses, b["poses"], b["mask"])
    )
    weights = {"recon_rel": 1.0, "log_depth": 100.0, "canonical": 1.0}
    torch.testing.assert_close(
        supervised_3d_loss(pred, b, weights), sum(reconstruction_terms(pred, b, weights).values())
    )
    muco_like = {k: b[k] for k in ("poses", "roots_px", "root_cells", "mask")}  # 3D GT but no canonical pose
    with pytest.raises(KeyError, match=r"\['canonical', 'depth'\]"):
        supervised_3d_loss(pred, muco_like, weights)
    supervised_3d_loss(pred, muco_like, {"recon": 1.0, "canonical": 0.0})  # a zero weight needs nothing


def test_diagnostics_by_hand():
    torch.manual_seed(0)
    b = _batch()
    gt, mask = b["poses"], b["mask"]
    same = pose_diagnostics(gt, gt, mask)
    assert same.mpjpe_rel < 1e-6 and same.canonical_mpjpe < 1e-6 and same.orientation_deg < 0.01
    assert same.spread_ratio == pytest.approx(1.0)
    mean = pose_diagnostics(mean_pose(gt, mask), gt, mask)
    assert mean.spread_pred < 1e-3 and mean.mpjpe_rel == pytest.approx(mean.mean_pose_mpjpe, rel=1e-6)
    # turning every person by 90 degrees of yaw: canonical pose intact, orientation off by exactly 90
    yaw = euler_to_sincos(torch.tensor([math.pi / 2, 0.0, 0.0]))
    turned = pose_diagnostics(
        rotate(b["canonical"], yaw.expand_as(b["rotation"])), rotate(b["canonical"], b["rotation"]), mask
    )
    assert turned.canonical_mpjpe < 1e-3
    from lightning_mp3d.geometry import canonical_to_camera_rotation

    expected = rotation_angle_deg(canonical_to_camera_rotation(yaw), canonical_to_camera_rotation(b["rotation"]))
    assert turned.orientation_deg == pytest.approx(float(expected[mask].double().mean()), abs=0.05)
    empty = pose_diagnostics(gt, gt, torch.zeros_like(mask))
    assert empty.people == 0 and math.isnan(empty.mpjpe_rel)  # unknown stays unknown


def test_knn_lifting_recovers_bank_poses_and_is_invariant_to_placement():
    knn = KNNLifting(num_people=2000, k=1, seed=4)
    k = Intrinsics.for_image(224)
    rel = knn.poses[:5]
    # the same people placed elsewhere and farther: same features, so the same neighbours
    depth = torch.full((5,), 7000.0)
    roots = torch.tensor([[60.0, 80.0]]).expand(5, 2)
    joints = project(translate(rel, roots, depth, k), k)
    lifted = knn(joints, depth)
    assert lifted.shape == (5, 15, 3)
    assert (lifted - rel).norm(dim=-1).mean() < 30  # perspective differs slightly from the bank's placement
    assert lifting_features(joints, depth, k).shape == (5, 30)


def test_local_round_trip_used_by_the_terms_holds_for_dsyn_batches():
    b = _batch()
    c = b["canonical"][b["mask"]]
    assert torch.allclose(forward_kinematics(to_local(c)), c, atol=1e-2)
