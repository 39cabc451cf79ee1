"""M: the fixed, differentiable decoder from the neural scene representation s to a multi-person 3D scene.

Pool (phi, c, x) at the given root cells of s -> frozen Psi -> FK -> T_R(c) -> T_G(root px, d) -> P_hat, and
T_K(P_hat) -> k_hat_p. No trainable parameters: only the frozen pose decoder Psi (paper 3.1.2, suppl. 2.1).

Depth: H emits a raw number x per cell; M reads the absolute root depth as ``d = depth_scale_mm * exp(x)``
(positive, scale-equivariant: a constant offset in x is a relative depth change, and x = 0 is a typical depth).
Roots: T_G takes the exact root pixel when one is given (D_syn's projected root, the teacher's grouped pelvis) and
the centre of the root cell otherwise (NMS at inference), so ``T_K`` puts the predicted pelvis exactly there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from lightning_mp3d.geometry import Intrinsics, forward_kinematics, grid_to_pixel, project, rotate, translate
from lightning_mp3d.models.student import split_scene


class DecodedScene(NamedTuple):
    """People decoded at N root slots per image (slots with mask False hold finite garbage)."""

    poses: torch.Tensor  # (B, N, 15, 3) camera-centred P_hat, mm
    keypoints: torch.Tensor  # (B, N, 15, 2) k_hat_p = T_K(P_hat), px
    mask: torch.Tensor  # (B, N) bool
    canonical: torch.Tensor  # (B, N, 15, 3) p_c, mm
    phi: torch.Tensor  # (B, N, 32)
    rotation: torch.Tensor  # (B, N, 6) raw c
    depth: torch.Tensor  # (B, N) mm
    roots_px: torch.Tensor  # (B, N, 2) px
    root_logit: torch.Tensor  # (B, N)


def pool_cells(maps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Read the channel vectors of ``maps`` at grid cells.

    Args:
        maps: (B, C, G, G).
        cells: (B, N, 2) long (col, row); clamped into the grid.

    Returns:
        (B, N, C).
    """
    b, c, g, _ = maps.shape
    cells = cells.long().clamp(0, g - 1)
    flat = (cells[..., 1] * g + cells[..., 0])[:, None, :].expand(b, c, cells.shape[1])  # (B, C, N)
    return maps.flatten(2).gather(2, flat).transpose(1, 2)


class SceneDecoder(nn.Module):
    """M, with the frozen Psi inside.

    Args:
        pose_decoder: frozen Psi, phi (..., 32) -> p_l (..., 15, 3); set to eval with requires_grad False here.
        image_size: input side in pixels (224); fixes the intrinsics (``Intrinsics.for_image``).
        depth_scale_mm: d0 in ``d = d0 * exp(x)``.
        max_log_depth: the value of x is clamped to +-max (d stays within d0 * e^{+-max}) but its gradient passes
            straight through: a plain clamp left a diverged depth stuck at 100 m with zero gradient.
    """

    def __init__(
        self,
        pose_decoder: nn.Module,
        image_size: int = 224,
        depth_scale_mm: float = 5000.0,
        max_log_depth: float = 3.0,
    ) -> None:
        super().__init__()
        self.pose_decoder = pose_decoder
        self.pose_decoder.eval()
        for p in self.pose_decoder.parameters():
            p.requires_grad_(False)
        self.image_size = image_size
        self.intrinsics = Intrinsics.for_image(image_size)
        self.depth_scale_mm = depth_scale_mm
        self.max_log_depth = max_log_depth

    def train(self, mode: bool = True) -> SceneDecoder:
        """Psi stays in eval mode whatever the parent does."""
        super().train(mode)
        self.pose_decoder.eval()
        return self

    def depth_from_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Raw depth channel -> millimetres."""
        bounded = x + (x.clamp(-self.max_log_depth, self.max_log_depth) - x).detach()  # value clamped, gradient kept
        return self.depth_scale_mm * torch.exp(bounded)

    def raw_from_depth(self, depth_mm: torch.Tensor) -> torch.Tensor:
        """Millimetres -> raw depth channel value (inverse of ``depth_from_raw`` inside d0 * e^{+-max})."""
        return torch.log(depth_mm / self.depth_scale_mm)

    def forward(
        self,
        s: torch.Tensor,
        root_cells: torch.Tensor,
        root_mask: torch.Tensor,
        roots_px: torch.Tensor | None = None,
    ) -> DecodedScene:
        """Decode the people at the given roots.

        Args:
            s: (B, 40, G, G) output of H.
            root_cells: (B, N, 2) long (col, row) cells to pool.
            root_mask: (B, N) bool.
            roots_px: (B, N, 2) exact root pixels for T_G; default: the cell centres.

        Returns:
            DecodedScene.
        """
        if root_cells.ndim != 3 or root_cells.shape[-1] != 2 or root_mask.shape != root_cells.shape[:2]:
            raise ValueError(
                f"root_cells must be (B, N, 2) and root_mask (B, N), got {tuple(root_cells.shape)}, "
                f"{tuple(root_mask.shape)}"
            )
        g = s.shape[-1]
        logits, phi_map, c_map, x_map = split_scene(s)
        maps = torch.cat((logits[:, None], phi_map, c_map, x_map[:, None]), 1)
        pooled = pool_cells(maps, root_cells)  # (B, N, 40)
        logit, phi, c, x = pooled[..., 0], pooled[..., 1:33], pooled[..., 33:39], pooled[..., 39]
        if roots_px is None:
            roots_px = grid_to_pixel(root_cells, g, self.image_size).to(s.dtype)
        elif roots_px.shape != root_cells.shape:
            raise ValueError(f"roots_px must be {tuple(root_cells.shape)}, got {tuple(roots_px.shape)}")
        p_l = self.pose_decoder(phi)  # (B, N, 15, 3)
        p_c = forward_kinematics(p_l)
        p_r = rotate(p_c, c)
        depth = self.depth_from_raw(x)
        poses = translate(p_r, roots_px.to(s.dtype), depth, self.intrinsics)
        keypoints = project(poses, self.intrinsics)
        return DecodedScene(poses, keypoints, root_mask.bool(), p_c, phi, c, depth, roots_px, logit)
