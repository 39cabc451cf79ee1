"""The student's trainable mappers (paper 3.2, suppl. 2, Fig. 2): G (2D pose maps -> latent) and H (latent -> scene).

- ``PoseMapEncoder`` (G): m_syn (B, 43, 28, 28) -> v~ (B, C_v, 28, 28). Five 7x7 convolutions with LeakyReLU between
  them and a ReLU after the last, so v~ has the range of the teacher's v = E(I), which is non-negative (both teachers
  apply ReLU after conv5_4 and conv4_4_CPM).
- ``TeacherMapsInput``: with ``h_input: maps`` (our addition), H reads an image as G(F(E(I))), its teacher's maps
  through G, instead of E(I).
- ``SceneHead`` (H): v (B, C_v, 28, 28) -> s (B, 40, 14, 14). Convolutions down to 7x7, the channel-wise fully
  connected layer on 7x7x128 (128 independent 49 -> 49 FC layers), a stride-2 deconvolution back to 14x14 with a skip
  connection from the 14x14 features, LeakyReLU everywhere, tanh on the 32 pose-embedding channels.

Output channel layout of s (``ROOT_CHANNEL``, ``PHI_SLICE``, ``ROTATION_SLICE``, ``DEPTH_CHANNEL`` below): 0 root
heatmap logit (sigmoid gives the pelvis probability), 1..32 phi (tanh, in [-1, 1]), 33..38 rotation c (6 raw numbers;
``sincos_to_matrix`` normalises each sin/cos pair), 39 raw depth x (the scene decoder M reads it as
``d = depth_scale_mm * exp(x)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

ROOT_CHANNEL = 0
PHI_SLICE = slice(1, 33)
ROTATION_SLICE = slice(33, 39)
DEPTH_CHANNEL = 39
SCENE_CHANNELS = 40
EMBEDDING_DIM = 32
MAP_CHANNELS = 43  # 15 joint heatmaps + 28 PAF channels
LATENT_SIZE = 28
OUTPUT_GRID = 14


LEAKY_SLOPE = 0.2


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


def _conv_block(c_in: int, c_out: int, kernel: int, norm: bool, **kw) -> list[nn.Module]:
    """Conv (+ GroupNorm with up to 8 groups when ``norm``) + LeakyReLU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, **kw)]
    if norm:
        layers.append(nn.GroupNorm(math.gcd(8, c_out), c_out))
    return [*layers, _leaky()]


def he_init(module: nn.Module) -> None:
    """He (Kaiming normal, fan-in) init of every convolution, zero biases.

    PyTorch's default init shrinks the signal by about half per layer, so through G's five and H's six layers the
    gradient that reaches the first layers all but vanishes and the from-scratch student learned orientation but
    never the articulated pose (benchmarks/bench_learning.py). Linear layers (the channel-wise FC) keep their own init.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


class PoseMapEncoder(nn.Module):
    """G: multi-person 2D pose maps -> the teacher's latent space.

    Args:
        v_channels: C_v, the teacher's latent channels (``teacher.v_channels``).
        hidden: channels of the four hidden 7x7 convolutions.
        in_channels: map channels (15 heatmaps + 28 PAFs).
        skip: add a 1x1 convolution from the maps to the output (see ``__init__``).
        norm: GroupNorm after each hidden convolution (our addition, off in the paper).
    """

    def __init__(
        self,
        v_channels: int,
        hidden: int = 256,
        in_channels: int = MAP_CHANNELS,
        skip: bool = False,
        norm: bool = False,
    ) -> None:
        super().__init__()
        if v_channels < 1 or hidden < 1:
            raise ValueError(f"v_channels and hidden must be positive, got {v_channels} and {hidden}")
        widths = [in_channels, hidden, hidden, hidden, hidden, v_channels]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += _conv_block(widths[i], widths[i + 1], 7, norm, padding=3)
        layers.append(nn.Conv2d(widths[4], widths[5], 7, padding=3))
        self.net = nn.Sequential(*layers)
        # A 1x1 path from the maps straight to v~ (our addition, off in the paper): the exact joint/limb positions
        # reach H even when the hidden width is smaller than the 43 map channels (the tiny preset's 32).
        self.skip = nn.Conv2d(in_channels, v_channels, 1) if skip else None
        he_init(self)
        self.v_channels = v_channels
        self.in_channels = in_channels

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """maps: (B, 43, 28, 28) heatmaps + PAFs -> v~ (B, C_v, 28, 28)."""
        if maps.ndim != 4 or maps.shape[1] != self.in_channels:
            raise ValueError(f"maps must be (B, {self.in_channels}, H, W), got {tuple(maps.shape)}")
        v = self.net(maps)
        if self.skip is not None:
            v = v + self.skip(maps)
        return torch.relu(v)


H_INPUTS = ("v", "maps")  # what H reads of an image: the teacher's latent E(I), or its maps through G (our addition)


class TeacherMapsInput(nn.Module):
    """H's input read from an image through the teacher's maps: G(F(E(I))) (``h_input: maps``, our addition).

    The image is read the way the D_syn pathway reads m_syn: the frozen teacher's heatmaps and PAFs F(v), in m_syn's
    channel layout (15 heatmaps, then 28 PAF channels), through G. ``encode`` makes it a drop-in for a teacher's
    ``encode`` (``inference.PoseEstimator``, the refinement's crops).

    Args:
        teacher: the frozen teacher {E, F} (``encode``, ``decode``).
        g: G.
    """

    def __init__(self, teacher: nn.Module, g: PoseMapEncoder) -> None:
        super().__init__()
        self.teacher, self.g = teacher, g
        self.v_channels = g.v_channels

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """The latent v = E(I) (B, C_v, 28, 28) -> G(F(v)) (B, C_v, 28, 28)."""
        return self.g(torch.cat(self.teacher.decode(v), 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, W, W) -> G(F(E(I)))."""
        return self(self.teacher.encode(images))


class ChannelwiseFC(nn.Module):
    """One fully connected layer per channel over its flattened spatial map (Pathak et al.'s channel-wise FC).

    Args:
        channels: number of channels C (each gets its own (S, S) weight matrix).
        size: spatial side; S = size * size.
    """

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        n = size * size
        self.weight = nn.Parameter(torch.randn(channels, n, n) / n**0.5)
        self.bias = nn.Parameter(torch.zeros(channels, n))
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, size, size) -> (B, C, size, size)."""
        b, c, h, w = x.shape
        if (h, w) != (self.size, self.size) or c != self.weight.shape[0]:
            raise ValueError(f"expected (B, {self.weight.shape[0]}, {self.size}, {self.size}), got {tuple(x.shape)}")
        y = torch.einsum("bci,cio->bco", x.reshape(b, c, h * w), self.weight) + self.bias  # (B, C, S)
        return y.view(b, c, h, w)


class SceneHead(nn.Module):
    """H: latent v (B, C_v, 28, 28) -> neural scene representation s (B, 40, 14, 14).

    Args:
        v_channels: C_v of the teacher's latent.
        width: channels of the 14x14 and 7x7 feature maps.
        fc_channels: channels entering the channel-wise FC at 7x7 (128 in the paper).
        readout_dilations: residual dilated 3x3 convolutions after the fuse (our addition; empty in the paper).
        window: side of the person window on the 28x28 latent (our addition; 0 = off, the paper).
        window_channels: channels v is reduced to before the window layer.
        norm: GroupNorm after each hidden convolution (our addition; off in the paper).
    """

    def __init__(
        self,
        v_channels: int,
        width: int = 256,
        fc_channels: int = 128,
        readout_dilations: tuple[int, ...] = (),
        window: int = 0,
        window_channels: int = 16,
        norm: bool = False,
    ) -> None:
        super().__init__()
        if v_channels < 1 or width < 1 or fc_channels < 1 or any(d < 1 for d in readout_dilations) or window < 0:
            raise ValueError(
                f"v_channels, width, fc_channels, readout_dilations must be positive and window >= 0, got "
                f"{v_channels}, {width}, {fc_channels}, {readout_dilations}, {window}"
            )

        def block(c_in: int, c_out: int, kernel: int, **kw) -> nn.Sequential:
            return nn.Sequential(*_conv_block(c_in, c_out, kernel, norm, **kw))

        self.reduce = block(v_channels, width, 3, padding=1)  # 28x28
        self.down14 = block(width, width, 3, stride=2, padding=1)  # 14x14
        self.down7 = nn.Sequential(block(width, width, 3, stride=2, padding=1), block(width, fc_channels, 1))  # 7x7
        self.channel_fc = ChannelwiseFC(fc_channels, 7)
        self.up = nn.Sequential(nn.ConvTranspose2d(fc_channels, width, 4, stride=2, padding=1), _leaky())  # 14x14
        # Person window (our addition): every 14x14 cell reads a window x window patch of v (28x28) around it through
        # one dense layer, i.e. an MLP over the person's neighbourhood that can tell where each body part lies
        # relative to the root cell. Off (0) in the paper's H.
        self.window = (
            nn.Sequential(
                block(v_channels, window_channels, 1),
                block(window_channels, width, window, stride=2, padding=window // 2),
            )
            if window
            else None
        )
        self.fuse = block((3 if window else 2) * width, width, 3, padding=1)
        # Person readout (our addition): residual dilated 3x3 convolutions at 14x14, so the cell at a person's root
        # sees the whole body (a 1.7 m person at 3 m spans ~8 cells) before s is read there.
        self.readout = nn.ModuleList(block(width, width, 3, padding=d, dilation=d) for d in readout_dilations)
        self.out = nn.Conv2d(width, SCENE_CHANNELS, 1)
        self.v_channels = v_channels
        he_init(self)
        initialise_scene_output(self.out)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """v: (B, C_v, 28, 28) -> s (B, 40, 14, 14) with tanh applied to the phi channels 1..32."""
        if v.ndim != 4 or v.shape[1] != self.v_channels or v.shape[-2:] != (LATENT_SIZE, LATENT_SIZE):
            raise ValueError(f"v must be (B, {self.v_channels}, {LATENT_SIZE}, {LATENT_SIZE}), got {tuple(v.shape)}")
        x14 = self.down14(self.reduce(v))  # (B, W, 14, 14)
        x7 = nn.functional.leaky_relu(self.channel_fc(self.down7(x14)), 0.2)  # (B, F, 7, 7)
        parts = [self.up(x7), x14] + ([self.window(v)] if self.window is not None else [])
        x = self.fuse(torch.cat(parts, 1))  # (B, W, 14, 14)
        for block in self.readout:
            x = x + block(x)
        s = self.out(x)  # (B, 40, 14, 14)
        return torch.cat((s[:, :1], torch.tanh(s[:, PHI_SLICE]), s[:, ROTATION_SLICE.start :]), 1)


def scene_head_args(v_channels: int, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``SceneHead``'s arguments from a student stage's ``h_width``, ``h_fc_channels`` and ``h_options``."""
    options = dict(hparams.get("h_options") or {})
    if "readout_dilations" in options:
        options["readout_dilations"] = tuple(options["readout_dilations"])
    width, fc_channels = hparams.get("h_width", 256), hparams.get("h_fc_channels", 128)
    return {"v_channels": v_channels, "width": width, "fc_channels": fc_channels, **options}


def build_scene_head(v_channels: int, hparams: Mapping[str, Any]) -> SceneHead:
    """H from a student stage's hyper-parameters (``scene_head_args``)."""
    return SceneHead(**scene_head_args(v_channels, hparams))


def student_model_args(
    v_channels: int, hparams: Mapping[str, Any], g: bool = True, detector: bool = False
) -> dict[str, dict[str, Any]]:
    """Constructor arguments of the sub-models a student stage builds from its hyper-parameters.

    Keyed by their weights' prefix, as its checkpoints record them (``checkpoints.stage_record``): ``h`` (H), ``g``
    (G, with ``g``), ``detector`` (the refine stage's stage-1 H, with ``detector``) and ``scene_decoder`` (M less the
    frozen Psi).
    """
    args = {"h": scene_head_args(v_channels, hparams)}
    if g:
        options = hparams.get("g_options") or {}
        args["g"] = {"v_channels": v_channels, "hidden": hparams.get("g_hidden", 256), **options}
    if detector:
        args["detector"] = dict(args["h"])
    args["scene_decoder"] = {"depth_scale_mm": hparams.get("depth_scale_mm", 5000.0)}
    return args


ROOT_PRIOR = 0.01  # initial root probability of every cell (CenterNet's focal-loss prior)


def initialise_scene_output(out: nn.Conv2d) -> None:
    """Start H at a plausible scene: every cell decodes an upright, frontal person at d0 (5 m) with phi = 0.

    With PyTorch's default init the six rotation numbers start small with random signs, so each cell starts at a
    random orientation and the sin/cos normalisation amplifies the gradients; the root logit starts near 0.5
    probability everywhere. Here the weights start at zero (the usual zero-initialised last layer: the first step
    gives them the gradient, every earlier layer follows from the second), the rotation biases are (sin, cos) =
    (0, 1) for yaw, pitch and roll (c = 0: upright and frontal, ``geometry.rigid``), the depth bias is 0 (d = d0)
    and the root bias is ``logit(ROOT_PRIOR)``.
    """
    with torch.no_grad():
        out.weight.zero_()
        out.bias.zero_()
        out.bias[ROOT_CHANNEL] = math.log(ROOT_PRIOR / (1 - ROOT_PRIOR))
        out.bias[ROTATION_SLICE.start + 1 : ROTATION_SLICE.stop : 2] = 1.0  # the three cosines


def split_scene(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split s (B, 40, G, G) into (root logits (B, G, G), phi (B, 32, G, G), c (B, 6, G, G), raw depth (B, G, G))."""
    if s.ndim != 4 or s.shape[1] != SCENE_CHANNELS:
        raise ValueError(f"s must be (B, {SCENE_CHANNELS}, G, G), got {tuple(s.shape)}")
    return s[:, ROOT_CHANNEL], s[:, PHI_SLICE], s[:, ROTATION_SLICE], s[:, DEPTH_CHANNEL]
