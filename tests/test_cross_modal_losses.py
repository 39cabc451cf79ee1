"""Cross-modal losses and the differentiable image/keypoint transforms of L_ss."""

import math

import pytest
import torch

from lightning_mp3d.losses.cross_modal import (
    adaptation_loss,
    distillation_loss,
    reconstruction_loss,
    root_heatmap_loss,
    self_supervised_loss,
    transformed_roots,
)
from lightning_mp3d.roots import root_heatmap_targets
from lightning_mp3d.skeleton import FLIP_PERM
from lightning_mp3d.transforms import (
    crop_transform,
    flip_transform,
    identity_transform,
    random_spatial_transform,
    rotation_transform,
    transform_keypoints,
    transform_points,
    warp_images,
)


def _symmetric_person(centre_u: float = 112.0) -> torch.Tensor:
    """(15, 2) keypoints mirror-symmetric about u = centre_u: left joint = mirror of right joint."""
    k = torch.zeros(15, 2)
    k[:, 1] = torch.linspace(40, 200, 15)
    k[:, 0] = centre_u
    for j, fj in enumerate(FLIP_PERM):
        if fj > j:  # j is a right joint
            k[j, 0] = centre_u - 10.0 - 3.0 * j
            k[fj, 0] = centre_u + 10.0 + 3.0 * j
            k[fj, 1] = k[j, 1]
    return k


def test_identity_warp_reproduces_image_and_points():
    images = torch.rand(2, 3, 224, 224)
    t = identity_transform(2)
    torch.testing.assert_close(warp_images(images, t), images, atol=1e-4, rtol=0)  # float32 grid rounding
    pts = torch.rand(2, 4, 15, 2) * 224
    torch.testing.assert_close(transform_points(pts, t), pts)


def test_flip_warp_is_mirror_and_points_follow():
    images = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(warp_images(images, flip_transform(1)), images.flip(-1), atol=1e-4, rtol=0)
    pts = torch.tensor([[[10.0, 30.0], [112.0, 5.0]]])
    torch.testing.assert_close(transform_points(pts, flip_transform(1)), torch.tensor([[[214.0, 30.0], [112.0, 5.0]]]))


@pytest.mark.parametrize(
    "transform",
    [
        rotation_transform(torch.tensor([math.pi / 2])),
        crop_transform(torch.tensor([0.5]), torch.tensor([[0.25, -0.25]])),
        flip_transform(1),
    ],
)
def test_points_move_with_the_image_content(transform):
    """A bright pixel at a point of I appears in I' where transform_points puts the point."""
    images = torch.zeros(1, 1, 224, 224)
    u, v = 130, 100  # pixel (row 100, col 130), centre (130.5, 100.5)
    images[0, 0, v - 1 : v + 2, u - 1 : u + 2] = 1.0
    warped = warp_images(images, transform)
    centre = transform_points(torch.tensor([[u + 0.5, v + 0.5]]), transform)[0]
    ys, xs = torch.meshgrid(torch.arange(224) + 0.5, torch.arange(224) + 0.5, indexing="ij")
    w = warped[0, 0]
    com = torch.stack(((w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()))
    torch.testing.assert_close(com, centre, atol=0.3, rtol=0)


def test_crop_maps_its_corner_to_the_image_corner():
    t = crop_transform(torch.tensor([0.5]), torch.tensor([[0.5, 0.5]]))  # bottom-right quarter
    torch.testing.assert_close(
        transform_points(torch.tensor([[112.0, 112.0], [224.0, 224.0]])[None], t)[0],
        torch.tensor([[0.0, 0.0], [224.0, 224.0]]),
    )


def test_warp_gradcheck_float64():
    images = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    theta = rotation_transform(torch.tensor([0.3], dtype=torch.float64)).theta.requires_grad_(True)

    def f(img, th):
        return warp_images(img, identity_transform(1)._replace(theta=th))

    assert torch.autograd.gradcheck(f, (images, theta), eps=1e-6, atol=1e-4)


def test_random_transforms_are_seeded_and_use_all_kinds():
    a = random_spatial_transform(64, torch.Generator().manual_seed(1))
    b = random_spatial_transform(64, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.theta, b.theta)
    assert a.theta.dtype == torch.float64 and a.theta.device.type == "cpu"  # the same draws for every device
    moved = a.to(torch.float32, "cpu")
    assert moved.theta.dtype == torch.float32 and torch.equal(moved.flipped, a.flipped)
    torch.testing.assert_close(moved.theta, a.theta.float(), rtol=0, atol=0)
    assert a.flipped.any() and not a.flipped.all()
    crops = (a.theta[:, 0, 0] > 0) & (a.theta[:, 0, 1] == 0) & (a.theta[:, 0, 0] < 0.999)
    rotations = a.theta[:, 0, 1] != 0
    assert crops.any() and rotations.any()
    # crops stay inside the image: |centre| + scale <= 1
    assert (a.theta[crops, :, 2].abs() + a.theta[crops, 0, 0, None] <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="kinds"):
        random_spatial_transform(2, kinds=("shear",))


def test_ss_loss_zero_for_identity():
    k = torch.rand(2, 3, 15, 2) * 224
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert self_supervised_loss(k, k.clone(), identity_transform(2), mask) == 0


def test_ss_loss_flip_on_symmetric_person():
    """A mirror-symmetric person flips onto itself with labels swapped: equivariant prediction costs 0."""
    k = _symmetric_person()[None, None]
    mask = torch.ones(1, 1, dtype=torch.bool)
    flip = flip_transform(1)
    torch.testing.assert_close(transform_keypoints(k, flip), k)
    assert self_supervised_loss(k, k.clone(), flip, mask) < 1e-4  # float32 rounding of the pixel maps
    # predicting the mirrored positions *without* swapping labels is penalised
    unswapped = k[:, :, list(FLIP_PERM)]
    assert self_supervised_loss(k, unswapped, flip, mask) > 10.0
    # an asymmetric person is not its own mirror image
    asym = k.clone()
    asym[..., 7, 0] += 20.0
    assert self_supervised_loss(asym, asym, flip, mask) > 0


def test_ss_loss_rotation_hand_computed():
    k = torch.full((1, 1, 15, 2), 112.0)
    k[0, 0, :, 0] = 122.0  # 10 px right of the centre
    rot = rotation_transform(torch.tensor([math.pi / 2]))  # clockwise on screen: right -> down
    expected = k.clone()
    expected[..., 0], expected[..., 1] = 112.0, 122.0
    torch.testing.assert_close(transform_keypoints(k, rot), expected, atol=1e-4, rtol=0)
    mask = torch.ones(1, 1, dtype=torch.bool)
    # not predicting the rotation costs |112 - 122| = 10 px in u and in v
    torch.testing.assert_close(self_supervised_loss(k, k, rot, mask), torch.tensor(10.0), atol=1e-4, rtol=0)


def test_transformed_roots_drop_people_cropped_away():
    roots = torch.tensor([[[20.0, 20.0], [200.0, 200.0]]])
    t = crop_transform(torch.tensor([0.5]), torch.tensor([[0.5, 0.5]]))
    moved, cells, mask = transformed_roots(roots, torch.tensor([[True, True]]), t)
    assert mask.tolist() == [[False, True]]
    torch.testing.assert_close(moved[0, 1], torch.tensor([176.0, 176.0]))
    assert cells[0, 1].tolist() == [11, 11]


def test_distillation_loss_hand_computed_and_confidence_weighted():
    s = torch.zeros(1, 2, 15, 2)
    t = torch.zeros(1, 2, 15, 2)
    t[0, 0, 0] = torch.tensor([3.0, 1.0])  # |diff| 3 and 1
    t[0, 1] = 100.0  # masked person
    conf = torch.zeros(1, 2, 15)
    conf[0, 0, :2] = 1.0  # joints 0 and 1 count
    mask = torch.tensor([[True, False]])
    torch.testing.assert_close(distillation_loss(s, t, conf, mask), torch.tensor(4.0 / 4))
    assert distillation_loss(s, t, torch.zeros_like(conf), mask) == 0


def test_reconstruction_and_adaptation_losses():
    pred = torch.zeros(2, 2, 15, 3)
    gt = torch.full((2, 2, 15, 3), 7.0)
    mask = torch.tensor([[True, False], [False, False]])
    torch.testing.assert_close(reconstruction_loss(pred, gt, mask), torch.tensor(7.0))
    with pytest.raises(ValueError, match="reconstruction_loss"):
        reconstruction_loss(pred, gt[:, :1], mask)
    maps = torch.rand(2, 43, 28, 28)
    assert adaptation_loss(maps[:, :15], maps[:, 15:], maps) == 0
    torch.testing.assert_close(adaptation_loss(maps[:, :15] + 1, maps[:, 15:], maps), torch.tensor(15 / 43))


def test_root_loss_prefers_correct_heatmaps():
    cells = torch.tensor([[[3, 4], [9, 9]]])
    target = root_heatmap_targets(cells, torch.ones(1, 2, dtype=torch.bool))
    good = torch.logit(target.clamp(1e-3, 1 - 1e-3))
    bad = torch.zeros_like(good)
    lg, lb = root_heatmap_loss(good, target), root_heatmap_loss(bad, target)
    assert torch.isfinite(lg) and lg < 0.1 < 1.0 < lb
    logits = bad.clone().requires_grad_(True)
    root_heatmap_loss(logits, target).backward()
    assert logits.grad[0, 4, 3] < 0  # raise the root logit
