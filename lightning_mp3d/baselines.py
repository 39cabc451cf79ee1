"""Reference predictors a sceptic asks for, beside the student: the mean pose and lifting from exact GT 2D.

Pure tensor code (no Lightning). Both work on GT people (no detection), so they bound what the pose estimate alone
can reach on a test set:

- ``mean_pose``: every person gets the same root-relative pose (the test set's own GT mean: optimistic).
- ``KNNLifting``: k-nearest-neighbour lifting of the *exact* GT 2D joints, with a bank drawn from D_syn (the 3D
  data an unsupervised user has: artificial poses in random scenes). Features are the root-relative 2D joints
  back-projected to the person's GT root depth (``(k - k_root) * d / f``, millimetres in the image plane), so
  the bank is independent of where and how far the person stands; the estimate is the mean root-relative
  camera-frame pose of the k nearest bank people. It uses GT 2D and GT root depth: an oracle-input bound on
  single-frame 2D -> 3D lifting with this pose prior, not a competitor.
"""

from __future__ import annotations

import torch

from lightning_mp3d.geometry import Intrinsics
from lightning_mp3d.skeleton import ROOT


def mean_root_relative_pose(gt_poses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., N, 15, 3) GT poses, (..., N) mask -> (15, 3) their mean root-relative pose."""
    rel = gt_poses - gt_poses[..., ROOT : ROOT + 1, :]
    return rel[mask].mean(0)


def mean_pose(gt_poses: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Every person gets ``mean`` (default: the masked mean root-relative pose of ``gt_poses``) at its GT root."""
    mean = mean_root_relative_pose(gt_poses, mask) if mean is None else mean
    return mean.expand_as(gt_poses) + gt_poses[..., ROOT : ROOT + 1, :]


def lifting_features(joints_2d: torch.Tensor, depth: torch.Tensor, intrinsics: Intrinsics) -> torch.Tensor:
    """(..., 15, 2) px and (...) root depth mm -> (..., 30) root-relative image-plane millimetres."""
    rel = joints_2d - joints_2d[..., ROOT : ROOT + 1, :]
    return (rel * (depth[..., None, None] / intrinsics.focal)).flatten(-2)


class KNNLifting:
    """k-NN lifting from exact 2D with a D_syn bank (see the module docstring).

    Args:
        num_people: bank size (people drawn with ``synth.compose_scenes``'s D_syn defaults).
        k: neighbours averaged.
        seed: the bank's seed.
        image_size: input side (fixes the intrinsics).
    """

    def __init__(self, num_people: int = 100_000, k: int = 8, seed: int = 11, image_size: int = 224) -> None:
        from lightning_mp3d.synth.scenes import compose_scenes

        scenes = compose_scenes(
            num_people, generator=torch.Generator().manual_seed(seed), min_people=1, max_people=1,
            image_size=image_size,
        )  # fmt: skip
        self.intrinsics = Intrinsics.for_image(image_size)
        self.features = lifting_features(scenes.joints_2d[:, 0], scenes.depth[:, 0], self.intrinsics)  # (N, 30)
        poses = scenes.poses[:, 0]
        self.poses = poses - poses[:, ROOT : ROOT + 1]  # (N, 15, 3) root-relative camera frame
        self.k = k

    def __call__(self, joints_2d: torch.Tensor, depth: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """(Q, 15, 2) exact 2D px and (Q,) root depth mm -> (Q, 15, 3) root-relative poses, mm."""
        query = lifting_features(joints_2d, depth, self.intrinsics)
        out = []
        for start in range(0, query.shape[0], chunk):  # bounded memory: Q x N distances per chunk
            dist = torch.cdist(query[start : start + chunk], self.features)  # (q, N)
            index = dist.topk(self.k, largest=False).indices  # (q, k)
            out.append(self.poses[index].mean(1))
        return torch.cat(out) if out else self.poses.new_zeros(0, *self.poses.shape[1:])
