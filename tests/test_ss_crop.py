"""L_ss with crops (issue 13, item 7): a crop's zoom is carried by the depth, so a crop-equivariant prediction (same
pose, depth d / zoom) costs nothing and L_ss never asks the pose to absorb the zoom."""

import pytest
import torch

from lightning_mp3d.geometry import Intrinsics, project, translate
from lightning_mp3d.losses.cross_modal import self_supervised_loss
from lightning_mp3d.transforms import crop_transform, flip_transform, transform_points

CAMERA = Intrinsics.for_image(224)


def facing_person() -> torch.Tensor:
    """A root-relative pose (1, 1, 15, 3) mm in a plane facing the camera (every joint at the root's depth)."""
    xy = torch.tensor(
        [[0, 0], [0, -500], [0, -720], [-180, -480], [180, -480], [-260, -220], [260, -220], [-300, 20], [300, 20],
         [-100, 0], [100, 0], [-110, 420], [110, 420], [-120, 830], [120, 830]],
        dtype=torch.float64,
    )  # fmt: skip
    return torch.cat((xy, torch.zeros(15, 1, dtype=torch.float64)), -1)[None, None]


def seen(pose: torch.Tensor, roots_px: torch.Tensor, depth: float) -> torch.Tensor:
    """Keypoints (1, 1, 15, 2) of ``pose`` placed at ``roots_px`` (1, 1, 2) and ``depth`` mm."""
    return project(translate(pose, roots_px, torch.tensor([[depth]], dtype=torch.float64), CAMERA), CAMERA)


@pytest.fixture
def scene():
    crop = crop_transform(torch.tensor([0.75], dtype=torch.float64), torch.tensor([[0.1, -0.05]], dtype=torch.float64))
    root = torch.tensor([[[120.0, 100.0]]], dtype=torch.float64)
    return crop, root, transform_points(root, crop), 4000.0, 1 / 0.75  # transform, r, T_s(r), d, zoom


def test_crop_equivariant_prediction_has_zero_ss(scene):
    crop, root, root_prime, d, zoom = scene
    pose, mask = facing_person(), torch.ones(1, 1, dtype=torch.bool)
    k = seen(pose, root, d)
    k_prime = seen(pose, root_prime, d / zoom)  # the same person, zoom times closer: exactly what the crop shows
    depth, depth_prime = torch.tensor([[d]]).double(), torch.tensor([[d / zoom]]).double()
    assert self_supervised_loss(k, k_prime, crop, mask, 224, depth, depth_prime) < 1e-9
    # depth that did not follow the crop, pose unchanged: the pose is right, and L_ss does not push it
    k_same_depth = seen(pose, root_prime, d)
    same = torch.tensor([[d]]).double()
    assert self_supervised_loss(k, k_same_depth, crop, mask, 224, depth, same) < 1e-9
    assert self_supervised_loss(k, k_same_depth, crop, mask) > 2.0  # the plain 2D loss would bend the pose
    # a pose inflated to fake the zoom at an unchanged depth is penalised
    inflated = seen(pose * zoom, root_prime, d)
    assert self_supervised_loss(k, inflated, crop, mask, 224, depth, same) > 2.0


def test_flip_at_equal_depth_is_the_plain_loss(scene):
    _, root, _, d, _ = scene
    k = seen(facing_person(), root, d) + torch.randn(1, 1, 15, 2, dtype=torch.float64)
    other = k + 3.0 * torch.randn(1, 1, 15, 2, dtype=torch.float64)
    mask, depth = torch.ones(1, 1, dtype=torch.bool), torch.tensor([[d]]).double()
    flip = flip_transform(1, torch.float64)
    torch.testing.assert_close(
        self_supervised_loss(k, other, flip, mask, 224, depth, depth), self_supervised_loss(k, other, flip, mask)
    )
    with pytest.raises(ValueError, match="both"):
        self_supervised_loss(k, other, flip, mask, 224, depth)
