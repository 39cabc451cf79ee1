"""The student's trainable mappers (paper 3.2, suppl. 2, Fig. 2): G (2D pose maps -> latent) and H (latent -> scene).

- ``PoseMapEncoder`` (G): m_syn (B, 43, 28, 28) -> v~ (B, C_v, 28, 28). Five 7x7 convolutions with LeakyReLU between
  them; the last one is linear so v~ can take any value range the teacher's v has (for OpenPose that includes the
  ReLU-free conv5_4 outputs and the 128 conv4_4_CPM channels, C_v = 1152).
- ``SceneHead`` (H): v (B, C_v, 28, 28) -> s (B, 40, 14, 14). Convolutions down to 7x7, the channel-wise fully
  connected layer on 7x7x128 (128 independent 49 -> 49 FC layers), a stride-2 deconvolution back to 14x14 with a skip
  connection from the 14x14 features, LeakyReLU everywhere, tanh on the 32 pose-embedding channels.

Output channel layout of s (``SceneChannels``): 0 root heatmap logit (sigmoid gives the pelvis probability),
1..32 phi (tanh, in [-1, 1]), 33..38 rotation c (6 raw numbers; ``sincos_to_matrix`` normalises each sin/cos pair),
39 raw depth x (the scene decoder M reads it as ``d = depth_scale_mm * exp(x)``).
"""

from __future__ import annotations

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
# Key of the record (stage, v_channels, source checkpoints) that every student-stage checkpoint carries.
STAGE_KEY = "lightning_mp3d_stage"


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


class PoseMapEncoder(nn.Module):
    """G: multi-person 2D pose maps -> the teacher's latent space.

    Args:
        v_channels: C_v, the teacher's latent channels (``teacher.v_channels``).
        hidden: channels of the four hidden 7x7 convolutions.
        in_channels: map channels (15 heatmaps + 28 PAFs).
    """

    def __init__(self, v_channels: int, hidden: int = 256, in_channels: int = MAP_CHANNELS) -> None:
        super().__init__()
        if v_channels < 1 or hidden < 1:
            raise ValueError(f"v_channels and hidden must be positive, got {v_channels} and {hidden}")
        widths = [in_channels, hidden, hidden, hidden, hidden, v_channels]
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 7, padding=3))
            if i < 4:
                layers.append(_leaky())
        self.net = nn.Sequential(*layers)
        self.v_channels = v_channels
        self.in_channels = in_channels

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """maps: (B, 43, 28, 28) heatmaps + PAFs -> v~ (B, C_v, 28, 28)."""
        if maps.ndim != 4 or maps.shape[1] != self.in_channels:
            raise ValueError(f"maps must be (B, {self.in_channels}, H, W), got {tuple(maps.shape)}")
        return self.net(maps)


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
    """

    def __init__(self, v_channels: int, width: int = 256, fc_channels: int = 128) -> None:
        super().__init__()
        if v_channels < 1 or width < 1 or fc_channels < 1:
            raise ValueError(
                f"v_channels, width, fc_channels must be positive, got {v_channels}, {width}, {fc_channels}"
            )
        self.reduce = nn.Sequential(nn.Conv2d(v_channels, width, 3, padding=1), _leaky())  # 28x28
        self.down14 = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), _leaky())  # 14x14
        self.down7 = nn.Sequential(
            nn.Conv2d(width, width, 3, stride=2, padding=1), _leaky(), nn.Conv2d(width, fc_channels, 1), _leaky()
        )  # 7x7
        self.channel_fc = ChannelwiseFC(fc_channels, 7)
        self.up = nn.Sequential(nn.ConvTranspose2d(fc_channels, width, 4, stride=2, padding=1), _leaky())  # 14x14
        self.fuse = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), _leaky())
        self.out = nn.Conv2d(width, SCENE_CHANNELS, 1)
        self.v_channels = v_channels

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """v: (B, C_v, 28, 28) -> s (B, 40, 14, 14) with tanh applied to the phi channels 1..32."""
        if v.ndim != 4 or v.shape[1] != self.v_channels or v.shape[-2:] != (LATENT_SIZE, LATENT_SIZE):
            raise ValueError(f"v must be (B, {self.v_channels}, {LATENT_SIZE}, {LATENT_SIZE}), got {tuple(v.shape)}")
        x14 = self.down14(self.reduce(v))  # (B, W, 14, 14)
        x7 = nn.functional.leaky_relu(self.channel_fc(self.down7(x14)), 0.2)  # (B, F, 7, 7)
        x = self.fuse(torch.cat((self.up(x7), x14), 1))  # (B, W, 14, 14)
        s = self.out(x)  # (B, 40, 14, 14)
        return torch.cat((s[:, :1], torch.tanh(s[:, PHI_SLICE]), s[:, ROTATION_SLICE.start :]), 1)


def split_scene(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split s (B, 40, G, G) into (root logits (B, G, G), phi (B, 32, G, G), c (B, 6, G, G), raw depth (B, G, G))."""
    if s.ndim != 4 or s.shape[1] != SCENE_CHANNELS:
        raise ValueError(f"s must be (B, {SCENE_CHANNELS}, G, G), got {tuple(s.shape)}")
    return s[:, ROOT_CHANNEL], s[:, PHI_SLICE], s[:, ROTATION_SLICE], s[:, DEPTH_CHANNEL]
