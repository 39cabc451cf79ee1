"""Losses of the cross-modal stages (paper 3.2, 3.3): L_distl, L_recon, L_adapt, L_ss, root heatmap, L_2D, L_3D.

Pure tensor functions (no Lightning). Units are kept natural: 2D losses in pixels, 3D losses in millimetres, map
losses in map units; each stage gives each loss its own Adam, which is invariant to a loss's scale. Every loss is a
masked mean of absolute differences (L1) over the valid entries, and 0 (with a graph) when nothing is valid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lightning_mp3d.geometry import canonical_to_camera_rotation, pixel_to_grid
from lightning_mp3d.transforms import SpatialTransform, inside_image, transform_keypoints, transform_points

if TYPE_CHECKING:
    from lightning_mp3d.models.scene_decoder import DecodedScene


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w * v) / sum(w), 0 when sum(w) == 0. ``weight`` broadcasts against ``values``."""
    weight = weight.to(values.dtype).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1e-8)


def _check_people(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, dim: int, name: str) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != dim or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"{name}: predictions and targets must be (B, N, 15, {dim}) and mask (B, N), got {tuple(pred.shape)}, "
            f"{tuple(target.shape)}, {tuple(mask.shape)}"
        )


def distillation_loss(
    student_2d: torch.Tensor, teacher_2d: torch.Tensor, confidence: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """L_distl = |k_hat_p - k_hat_q|, weighted by the teacher's joint confidence.

    Args:
        student_2d: (B, N, 15, 2) px, the student's people decoded at the teacher's root cells.
        teacher_2d: (B, N, 15, 2) px, the teacher's grouped people (same order).
        confidence: (B, N, 15) in [0, 1]; 0 for joints the teacher did not find.
        mask: (B, N) bool, people to use.

    Returns:
        Scalar, mean absolute pixel error per coordinate.
    """
    _check_people(student_2d, teacher_2d, mask, 2, "distillation_loss")
    weight = (confidence.clamp(0, 1) * mask[..., None])[..., None]  # (B, N, 15, 1)
    return _masked_mean((student_2d - teacher_2d).abs(), weight)


def reconstruction_loss(pred_poses: torch.Tensor, poses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_recon = |P_syn - P_tilde| on camera-centred 3D poses.

    Args:
        pred_poses: (B, N, 15, 3) mm.
        poses: (B, N, 15, 3) mm.
        mask: (B, N) bool.

    Returns:
        Scalar, mean absolute error per coordinate in mm.
    """
    _check_people(pred_poses, poses, mask, 3, "reconstruction_loss")
    return _masked_mean((pred_poses - poses).abs(), mask[..., None, None])


RECON_TERMS = ("recon", "recon_rel", "log_depth", "reproj", "canonical", "rotation")


def reconstruction_terms(
    pred: DecodedScene, batch: dict[str, torch.Tensor], weights: dict[str, float]
) -> dict[str, torch.Tensor]:
    """The D_syn pathway's loss terms that D_syn's ground truth allows, each switchable by a weight.

    ``recon`` is the paper's L_recon = |P_syn - P_tilde| (camera frame, mm). The others are our additions (off in the
    paper preset), all computed at the true roots of the batch:

    - ``recon_rel``: root-relative camera-frame L1, mm: the articulated pose and orientation without the root depth,
      whose metres of error would otherwise dominate the gradient.
    - ``log_depth``: |log d_hat - log d| (scale-free, the way M parameterises depth).
    - ``reproj``: |T_K(P_tilde) - k_syn|, px: the 2D evidence itself, unambiguous (no depth-sign ambiguity), the
      same kind of loss as L_distl on images.
    - ``canonical``: |p_c_hat - p_c|, mm: the view-free articulated pose through Psi.
    - ``rotation``: |R(c_hat) - R(c)| over the 9 matrix entries: the global orientation on its own.

    Args:
        pred: M's output at the batch's true roots.
        batch: a D_syn batch (``poses``, ``canonical``, ``rotation``, ``depth``, ``joints_2d``, ``mask``).
        weights: term name -> weight; terms with weight 0 (or absent) are not computed.

    Returns:
        name -> weighted scalar loss, for the terms with a non-zero weight.
    """
    unknown = set(weights) - set(RECON_TERMS)
    if unknown:
        raise ValueError(f"unknown reconstruction terms {sorted(unknown)}; expected some of {RECON_TERMS}")
    mask = batch["mask"]
    people = mask[..., None, None]

    def rel(p: torch.Tensor) -> torch.Tensor:
        return p - p[..., :1, :]

    def term(name: str) -> torch.Tensor:
        if name == "recon":
            return reconstruction_loss(pred.poses, batch["poses"], mask)
        if name == "recon_rel":
            return reconstruction_loss(rel(pred.poses), rel(batch["poses"]), mask)
        if name == "log_depth":
            return _masked_mean((pred.depth.log() - batch["depth"].clamp_min(1.0).log()).abs(), mask)
        if name == "reproj":
            return _masked_mean((pred.keypoints - batch["joints_2d"]).abs(), people)
        if name == "canonical":
            return _masked_mean((pred.canonical - batch["canonical"]).abs(), people)
        r_pred, r_gt = canonical_to_camera_rotation(pred.rotation), canonical_to_camera_rotation(batch["rotation"])
        return _masked_mean((r_pred - r_gt).abs(), people)

    return {name: w * term(name) for name, w in weights.items() if w}


def adaptation_loss(heatmaps: torch.Tensor, pafs: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """L_adapt = |F(G(m_syn)) - m_syn|.

    Args:
        heatmaps: (B, 15, 28, 28) decoded by the frozen F from G(m_syn).
        pafs: (B, 28, 28, 28) decoded PAFs.
        maps: (B, 43, 28, 28) m_syn (15 heatmaps then 28 PAF channels).

    Returns:
        Scalar mean absolute error per map value.
    """
    decoded = torch.cat((heatmaps, pafs), 1)
    if decoded.shape != maps.shape:
        raise ValueError(f"decoded maps {tuple(decoded.shape)} do not match m_syn {tuple(maps.shape)}")
    return (decoded - maps).abs().mean()


def root_heatmap_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """Penalty-reduced focal loss on Gaussian root targets (CenterNet, Zhou et al. 2019).

    Cells whose target is 1 are positives; others are negatives down-weighted by ``(1 - target)^beta`` near a root.
    Normalised by the number of positives (at least 1), so an image with 1 or 4 people weighs the same per root.

    Args:
        logits: (B, G, G) root logits.
        targets: (B, G, G) from ``roots.root_heatmap_targets``.
        alpha: focal exponent: ``(1 - p)^alpha`` on positives, ``p^alpha`` on negatives (CenterNet's 2).
        beta: exponent of the negatives' ``(1 - target)^beta`` reduction near a root (CenterNet's 4).

    Returns:
        Scalar.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must match")
    logp = torch.nn.functional.logsigmoid(logits)
    log1mp = torch.nn.functional.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos = (targets >= 1.0 - 1e-6).to(logits.dtype)
    pos_loss = -((1 - p) ** alpha) * logp * pos
    neg_loss = -((1 - targets) ** beta) * (p**alpha) * log1mp * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1.0)


def self_supervised_loss(
    keypoints: torch.Tensor,
    keypoints_transformed: torch.Tensor,
    transform: SpatialTransform,
    mask: torch.Tensor,
    image_size: int = 224,
    depth: torch.Tensor | None = None,
    depth_transformed: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_ss = |T_s(k_hat_p(I)) - k_hat_p(T_s(I))| (equivariance of the projected 2D poses), with a crop's zoom on depth.

    A crop-and-resize T_s magnifies I by ``zoom = 1 / sqrt|det A|`` (A: the linear part of ``transform.theta``; 1
    for flips and rotations). A person seen ``zoom`` times larger is the same pose at depth ``d / zoom``, so the zoom
    belongs to the depth, not to the pose. With ``depth`` and ``depth_transformed`` given, the target's root-relative
    part is rescaled by the depth ratio the prediction implies::

        target = T_s(r) + (T_s(k) - T_s(r)) * ratio,   ratio = d / (zoom * d'), detached

    so a prediction for I' at the crop-equivariant depth ``d' = d / zoom`` is compared with the plain transformed
    keypoints (ratio 1), and one whose depth did not follow the crop (``d' = d``) with the unzoomed pose (ratio
    1 / zoom): in neither case does L_ss ask φ and c to absorb the zoom. Flips and rotations at ``d' = d`` give the
    plain loss. Without depths: the plain 2D equivariance (the crop's zoom is then matched by the 2D pose).

    Args:
        keypoints: (B, N, 15, 2) px, people of I decoded at the teacher's roots of I.
        keypoints_transformed: (B, N, 15, 2) px, the same people decoded from I' at T_s(roots).
        transform: the T_s that made I' (flip swaps left/right labels).
        mask: (B, N) bool, people whose transformed root is inside I' (see ``transformed_roots``).
        image_size: square image side of I and I', pixels.
        depth: (B, N) mm, root depths predicted for I (only the ratio to ``depth_transformed`` is used, without
            gradient); None: the plain 2D equivariance.
        depth_transformed: (B, N) mm, root depths predicted for I'.

    Returns:
        Scalar mean absolute pixel error per coordinate (0 for the identity transform and identical inputs, and for a
        crop-equivariant prediction).
    """
    _check_people(keypoints, keypoints_transformed, mask, 2, "self_supervised_loss")
    target = transform_keypoints(keypoints, transform, image_size)
    if (depth is None) != (depth_transformed is None):
        raise ValueError("self_supervised_loss: give both depth and depth_transformed, or neither")
    if depth is not None:
        zoom = transform.theta[:, :, :2].det().abs().rsqrt().to(target)  # (B,)
        ratio = (depth / (zoom[:, None] * depth_transformed.clamp_min(1.0))).detach()  # (B, N)
        root = target[..., :1, :]  # the pelvis; a flip keeps it in place
        target = root + (target - root) * ratio[..., None, None]
    return _masked_mean((target - keypoints_transformed).abs(), mask[..., None, None])


def transformed_roots(
    roots_px: torch.Tensor, mask: torch.Tensor, transform: SpatialTransform, grid_size: int = 14, image_size: int = 224
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's roots of I mapped into I' by T_s.

    Args:
        roots_px: (B, N, 2) px in I.
        mask: (B, N) bool.
        transform: the T_s that made I'.
        grid_size: side of the root grid of the cells returned.
        image_size: square image side of I and I', pixels.

    Returns:
        (roots_px' (B, N, 2) px, root_cells' (B, N, 2) long (col, row), mask' (B, N): valid and inside I').
    """
    moved = transform_points(roots_px, transform, image_size)
    return moved, pixel_to_grid(moved, grid_size, image_size), mask & inside_image(moved, image_size)


def supervised_2d_loss(
    student_2d: torch.Tensor, joints_2d: torch.Tensor, visibility: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Weak supervision L_2D = |k_hat_p - k_gt| on visible GT joints (Ours-Ws). Shapes as ``distillation_loss``."""
    return distillation_loss(student_2d, joints_2d, visibility.to(student_2d.dtype), mask)


TERM_KEYS = {
    "recon": ("poses",),
    "recon_rel": ("poses",),
    "log_depth": ("depth",),
    "reproj": ("joints_2d",),
    "canonical": ("canonical",),
    "rotation": ("rotation",),
}
"""The ground-truth entries each reconstruction term reads (besides ``mask``)."""


def supervised_3d_loss(pred: DecodedScene, batch: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Full supervision L_3D on D_I images with 3D GT (Ours-Fs): the D_syn pathway's terms against the image's GT.

    The paper's L_3D = |P_hat - P_gt| is ``{"recon": 1.0}``; with the stage's ``recon_terms`` the full-supervision
    bound is trained with the same loss the D_syn pathway uses, so it measures what the images carry, not a weaker
    loss (camera-frame L1 alone never learns yaw, see ``reconstruction_terms``).

    Raises:
        KeyError: the batch lacks a GT entry a term needs (e.g. MuCo shards hold ``poses`` but no ``canonical``).
    """
    missing = sorted({k for name, w in weights.items() if w for k in TERM_KEYS.get(name, ())} - set(batch))
    if missing:
        raise KeyError(
            f"L_3D with terms {sorted(weights)} needs the D_I batch's {missing}, which it does not have "
            f"(it has {sorted(batch)}); use terms these images' GT supports, e.g. recon_terms: {{recon: 1.0}}"
        )
    return sum(reconstruction_terms(pred, batch, weights).values())
