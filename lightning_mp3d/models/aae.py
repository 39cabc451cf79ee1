"""Adversarial auto-encoder of single-person poses (paper 3.1.1, suppl. 1): encoder Φ, decoder Ψ, discriminator Disc.

Pure PyTorch (no Lightning). Shapes use the package legend: B batch, J = 15 joints, Z = 32 embedding.

- ``PoseEncoder`` Φ: local pose p_l (..., 15, 3) -> phi (..., Z) in (-1, 1) (tanh).
- ``PoseDecoder`` Ψ: phi (..., Z) -> p_l (..., 15, 3), unit vectors usable by ``geometry.forward_kinematics``.
  It is structured along the kinematic tree: a shared trunk maps phi to a feature, then one linear head per tree
  level (r_hip; head, r_shoulder, knees; elbows, ankles; wrists) predicts that level's bone directions from the
  feature *and* every direction already decoded nearer the root, so each limb is conditioned on its ancestors.
  Only the 11 joints with degrees of freedom are predicted; the output is completed exactly as FK reads it
  (pelvis row zero, neck = +e1, right hip in the body plane on the right, left hip/shoulder = minus the right
  ones, which share their local frame), so ``to_local(forward_kinematics(Ψ(phi))) == Ψ(phi)``.
- ``PoseDiscriminator`` Disc: local pose p_l (..., 15, 3) -> one real/fake logit (...,). It tells local poses of
  the data from poses decoded from phi ~ U[-1, 1]^Z, so the adversarial loss trains Ψ (the paper trains Ψ with
  L_cyc + L_adv and Φ with L_cyc only; its notation table calls Disc the "pose discriminator").
- ``load_pose_decoder(path)``: the frozen Ψ that later stages use, built from an AAE stage checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lightning_mp3d.geometry.pose import normalize, spherical_to_local
from lightning_mp3d.skeleton import NUM_JOINTS, check_pose_shape, joint_index
from lightning_mp3d.synth.poses import range_tensors

EMBEDDING_DIM = 32

# The joints with degrees of freedom in the local representation, grouped by depth in the kinematic tree.
# Neck (0 DoF), left hip and left shoulder (mirrors of the right ones) and the pelvis are completed analytically.
_LEVEL_JOINTS: tuple[tuple[str, ...], ...] = (
    ("r_hip",),
    ("head", "r_shoulder", "r_knee", "l_knee"),
    ("r_elbow", "l_elbow", "r_ankle", "l_ankle"),
    ("r_wrist", "l_wrist"),
)
DECODER_LEVELS: tuple[tuple[int, ...], ...] = tuple(tuple(joint_index(n) for n in lv) for lv in _LEVEL_JOINTS)
FREE_JOINTS: tuple[int, ...] = tuple(j for level in DECODER_LEVELS for j in level)  # 11 joints, tree order
_NECK, _R_HIP, _L_HIP = joint_index("neck"), joint_index("r_hip"), joint_index("l_hip")
_R_SHOULDER, _L_SHOULDER = joint_index("r_shoulder"), joint_index("l_shoulder")
# Where each output row comes from in the (..., 11, 3) decoded block, with the 4 fixed rows handled after.
_FREE_POS = {j: k for k, j in enumerate(FREE_JOINTS)}


def _mlp(in_features: int, width: int, depth: int, out_features: int | None = None) -> nn.Sequential:
    """``depth`` Linear+LeakyReLU blocks of ``width`` units, then an optional linear output layer."""
    layers: list[nn.Module] = []
    size = in_features
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.LeakyReLU(0.2)]
        size = width
    if out_features is not None:
        layers.append(nn.Linear(size, out_features))
    return nn.Sequential(*layers)


def free_joint_vectors(p_l: torch.Tensor) -> torch.Tensor:
    """The 11 local bone directions that carry degrees of freedom: (..., 15, 3) -> (..., 33)."""
    check_pose_shape(p_l, "p_l")
    return p_l[..., list(FREE_JOINTS), :].flatten(-2)


def complete_local_pose(free: torch.Tensor) -> torch.Tensor:
    """Full local pose from the 11 free directions, completed exactly as FK interprets it.

    Args:
        free: (..., 11, 3) raw directions in ``FREE_JOINTS`` order (any length; normalised here).

    Returns:
        p_l (..., 15, 3): unit vectors; pelvis row zero; neck (1, 0, 0); right hip (x, 0, -|z|) normalised (in the
        body plane, on the person's right); left hip and left shoulder the negated right ones (same local frame).
    """
    if free.ndim < 2 or free.shape[-2:] != (len(FREE_JOINTS), 3):
        raise ValueError(f"free must be (..., {len(FREE_JOINTS)}, 3), got {tuple(free.shape)}")
    k_hip = _FREE_POS[_R_HIP]
    hip = free[..., k_hip, :]
    hip = torch.stack((hip[..., 0], torch.zeros_like(hip[..., 0]), -hip[..., 2].abs()), dim=-1)
    free = torch.cat((free[..., :k_hip, :], hip.unsqueeze(-2), free[..., k_hip + 1 :, :]), dim=-2)
    free = normalize(free)
    zero = torch.zeros_like(free[..., :1, :])
    neck = zero.clone()
    neck[..., 0] = 1.0
    rows = {0: zero, _NECK: neck}
    rows.update({j: free[..., k : k + 1, :] for j, k in _FREE_POS.items()})
    rows[_L_HIP] = -rows[_R_HIP]
    rows[_L_SHOULDER] = -rows[_R_SHOULDER]
    return torch.cat([rows[j] for j in range(NUM_JOINTS)], dim=-2)


class PoseEncoder(nn.Module):
    """Φ: local pose -> pose embedding (an MLP on the 11 free bone directions, tanh output).

    Args:
        embedding_dim: Z, size of phi.
        width: hidden units per layer.
        depth: number of hidden layers.
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM, width: int = 256, depth: int = 3) -> None:
        super().__init__()
        self.net = _mlp(3 * len(FREE_JOINTS), width, depth, embedding_dim)

    def forward(self, p_l: torch.Tensor) -> torch.Tensor:
        """p_l: (..., 15, 3) local pose -> phi (..., Z) in (-1, 1)."""
        return torch.tanh(self.net(free_joint_vectors(p_l)))


class PoseDecoder(nn.Module):
    """Ψ: pose embedding -> local pose, decoded root to leaves along the kinematic tree.

    Args:
        embedding_dim: Z, size of phi.
        width: hidden units of the trunk (and size of the feature the level heads read).
        depth: number of trunk layers.
        range_scale: None (the paper's unconstrained unit vectors, normalised head outputs) or the
            artificial-pose-sampling ``range_scale`` whose joint-angle ranges bound the output (an addition beyond
            the paper): each head then gives per joint a polar angle ``gamma = lo + (hi - lo) sigmoid(a)`` and an
            azimuth ``theta = lo + (hi - lo) sigmoid(b)`` (``atan2(c, b)`` on a full-circle range), both kept
            ``range_margin_deg`` inside the range, so every phi decodes to a pose inside the ranges by construction.
            Use it only for data inside those ranges (the artificial default), not for MoCap poses beyond them.
        range_margin_deg: degrees kept between a bounded output and the ends of its range (> 0 guards the exact
            check against rounding).
    """

    def __init__(
        self,
        embedding_dim: int = EMBEDDING_DIM,
        width: int = 256,
        depth: int = 3,
        range_scale: float | None = None,
        range_margin_deg: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.config = {"embedding_dim": embedding_dim, "width": width, "depth": depth}
        if range_scale is not None:
            self.config.update(range_scale=range_scale, range_margin_deg=range_margin_deg)
            r = range_tensors(range_scale, dtype=torch.float32)
            m = torch.deg2rad(torch.tensor(range_margin_deg))
            free = list(FREE_JOINTS)
            t_lo, t_hi = r.theta_lo[free], r.theta_hi[free]
            t_m = torch.minimum(m.expand_as(t_lo), (t_hi - t_lo) / 4)
            g_lo, g_hi = r.gamma_lo[free], r.gamma_hi[free]
            g_m = torch.minimum(m.expand_as(g_lo), (g_hi - g_lo) / 4)
            # (11, 5): theta lo/width, gamma lo/width, full circle; buffers follow .to() and are not trained.
            bounds = torch.stack((t_lo + t_m, t_hi - t_lo - 2 * t_m, g_lo + g_m, g_hi - g_lo - 2 * g_m), -1)
            self.register_buffer("bounds", bounds, persistent=False)
            self.register_buffer("full_circle", r.full_circle[free], persistent=False)
        self.bounded = range_scale is not None
        self.trunk = _mlp(embedding_dim, width, depth)
        heads, decoded = [], 0
        for level in DECODER_LEVELS:
            heads.append(nn.Linear(width + 3 * decoded, 3 * len(level)))
            decoded += len(level)
        self.heads = nn.ModuleList(heads)

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        """phi: (..., Z) -> p_l (..., 15, 3) unit local bone directions (see ``complete_local_pose``)."""
        if phi.shape[-1] != self.embedding_dim:
            raise ValueError(f"phi must be (..., {self.embedding_dim}), got {tuple(phi.shape)}")
        feature = self.trunk(phi)
        outputs: list[torch.Tensor] = []
        start = 0
        for head, level in zip(self.heads, DECODER_LEVELS, strict=True):  # 4 tree levels, root to leaves
            out = head(torch.cat([feature, *outputs], dim=-1)).unflatten(-1, (-1, 3))  # (..., n, 3)
            if self.bounded:
                out = self._bounded_directions(out, slice(start, start + len(level)))
            start += len(level)
            outputs.append(normalize(out).flatten(-2))  # ancestors enter as unit vectors
        free = torch.cat(outputs, dim=-1).unflatten(-1, (len(FREE_JOINTS), 3))  # (..., 11, 3)
        return complete_local_pose(free)

    def _bounded_directions(self, out: torch.Tensor, joints: slice) -> torch.Tensor:
        """Raw head outputs (..., n, 3) -> unit local directions with angles inside the ranges (see Args)."""
        t_lo, t_w, g_lo, g_w = self.bounds[joints].unbind(-1)  # (n,) each
        theta = torch.where(
            self.full_circle[joints],
            torch.atan2(out[..., 2], out[..., 1] + 1e-6),
            t_lo + t_w * torch.sigmoid(out[..., 1]),
        )
        gamma = g_lo + g_w * torch.sigmoid(out[..., 0])
        return spherical_to_local(theta, gamma)


class PoseDiscriminator(nn.Module):
    """Disc: local pose -> logit that it comes from the data (not decoded from phi ~ U[-1, 1]^Z).

    Args:
        width: hidden units per layer.
        depth: number of hidden layers.
        spectral_norm: wrap every linear layer in spectral normalisation (Miyato et al. 2018; not in the paper).
    """

    def __init__(self, width: int = 256, depth: int = 3, spectral_norm: bool = False) -> None:
        super().__init__()
        self.net = _mlp(3 * len(FREE_JOINTS), width, depth, 1)
        if spectral_norm:
            for k, layer in enumerate(self.net):
                if isinstance(layer, nn.Linear):
                    self.net[k] = nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, p_l: torch.Tensor) -> torch.Tensor:
        """p_l: (..., 15, 3) -> logits (...,)."""
        return self.net(free_joint_vectors(p_l)).squeeze(-1)


def load_pose_decoder(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> PoseDecoder:
    """The frozen decoder Ψ of an AAE stage checkpoint (the way later stages get Ψ).

    Reads the checkpoint written by ``AAEPretraining`` (e.g. ``runs/aae/checkpoints/last.ckpt``) through
    ``checkpoints.read``: Ψ's arguments from its stage record, its weights from the ``pose_decoder.*`` keys
    (``decoder.*`` in checkpoints written before the rename).

    Args:
        ckpt_path: path of the AAE checkpoint.
        map_location: device to load onto.

    Returns:
        PoseDecoder in eval mode with ``requires_grad`` False on every parameter.

    Raises:
        FileNotFoundError: no file at ``ckpt_path``.
        ValueError: the file is not an AAE stage checkpoint (no record or no ``pose_decoder.*`` weights).
    """
    from lightning_mp3d import checkpoints

    ckpt = checkpoints.read(ckpt_path, expect_stage="aae", what="AAE checkpoint")
    decoder = ckpt.build(PoseDecoder, "pose_decoder").to(map_location).eval()
    decoder.requires_grad_(False)
    return decoder
