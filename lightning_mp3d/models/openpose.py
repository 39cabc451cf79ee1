"""The OpenPose body model (Cao et al., CVPR 2017) with a width multiplier, in the layout of the PyTorch port.

Layer names and state-dict keys are those of the widely used PyTorch port (Hzzone/pytorch-openpose,
``bodypose_model``): ``model0`` holds the VGG19 front (``conv1_1`` ... ``conv4_2``) and ``conv4_3_CPM``,
``conv4_4_CPM``; ``model1_1`` / ``model1_2`` are the two stage-1 branches (``conv5_1_CPM_L1`` ... ``conv5_5_CPM_L1``;
L1 = part affinity fields, L2 = heatmaps); ``model2_1`` / ``model2_2`` are stage 2 (``Mconv1_stage2_L1`` ...
``Mconv7_stage2_L1``), which reads concat(stage-1 L1 output, stage-1 L2 output, conv4_4_CPM). Every conv is
followed by a ReLU except the last conv of each branch (``conv5_5_CPM_*``, ``Mconv7_stage*_*``).

The port's ``body_pose_model.pth`` stores flat keys (``conv1_1.weight``, ``Mconv1_stage2_L1.bias``, ...; the
port's ``util.transfer`` prepends the block name) and all six stages. :func:`load_openpose_state_dict` accepts
both the flat and the prefixed form, checks every key and shape strictly against the architecture, and
discards (after checking their shapes) the keys of refinement stages 3-6, which this model does not build.

Input: the port feeds ``BGR image / 256 - 0.5`` at stride 8 output, so a 224x224 input gives 28x28 maps.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

# Paper widths of the full model; every width is multiplied by ``width`` (rounded, at least 1).
_BLOCK0 = (
    ("conv1_1", 3, 64, 3),
    ("conv1_2", 64, 64, 3),
    ("pool1_stage1",),
    ("conv2_1", 64, 128, 3),
    ("conv2_2", 128, 128, 3),
    ("pool2_stage1",),
    ("conv3_1", 128, 256, 3),
    ("conv3_2", 256, 256, 3),
    ("conv3_3", 256, 256, 3),
    ("conv3_4", 256, 256, 3),
    ("pool3_stage1",),
    ("conv4_1", 256, 512, 3),
    ("conv4_2", 512, 512, 3),
    ("conv4_3_CPM", 512, 256, 3),
    ("conv4_4_CPM", 256, 128, 3),
)
OPENPOSE_PAF_CHANNELS = 38
OPENPOSE_HEATMAP_CHANNELS = 19  # 18 COCO parts + background
NUM_OPENPOSE_STAGES = 6


def scaled(channels: int, width: float) -> int:
    """A layer width times the width multiplier, rounded, at least 1 (input RGB channels are never scaled)."""
    return max(1, int(round(channels * width)))


class PoseMachineOutput(NamedTuple):
    """Both stages' outputs of a :class:`PoseMachine`, each (B, C, H/8, W/8), heatmaps before PAFs."""

    heatmap1: torch.Tensor
    paf1: torch.Tensor
    heatmap2: torch.Tensor
    paf2: torch.Tensor


def _conv_specs(width: float, paf_channels: int, heatmap_channels: int, num_stages: int) -> dict[str, list[tuple]]:
    """Per block name, its layers as (name, in, out, kernel) or (pool_name,)."""
    s = lambda c: scaled(c, width)  # noqa: E731
    blocks: dict[str, list[tuple]] = {
        "model0": [(n, 3 if c[0] == 3 else s(c[0]), s(c[1]), c[2]) if c else (n,) for n, *c in _BLOCK0]
    }
    c4, c5, cm = s(128), s(512), s(128)
    for branch, out in (("L1", paf_channels), ("L2", heatmap_channels)):
        idx = "1" if branch == "L1" else "2"
        blocks[f"model1_{idx}"] = [
            (f"conv5_1_CPM_{branch}", c4, s(128), 3),
            (f"conv5_2_CPM_{branch}", s(128), s(128), 3),
            (f"conv5_3_CPM_{branch}", s(128), s(128), 3),
            (f"conv5_4_CPM_{branch}", s(128), c5, 1),
            (f"conv5_5_CPM_{branch}", c5, out, 1),
        ]
        for t in range(2, num_stages + 1):
            blocks[f"model{t}_{idx}"] = [(f"Mconv1_stage{t}_{branch}", paf_channels + heatmap_channels + c4, cm, 7)]
            blocks[f"model{t}_{idx}"] += [(f"Mconv{i}_stage{t}_{branch}", cm, cm, 7) for i in range(2, 6)]
            blocks[f"model{t}_{idx}"] += [
                (f"Mconv6_stage{t}_{branch}", cm, cm, 1),
                (f"Mconv7_stage{t}_{branch}", cm, out, 1),
            ]
    return blocks


def _is_last(name: str) -> bool:
    return name.startswith("conv5_5_CPM") or name.startswith("Mconv7")


def _make_block(spec: list[tuple], norm: bool = False) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    for name, *conv in spec:
        if not conv:
            layers.append((name, nn.MaxPool2d(kernel_size=2, stride=2, padding=0)))
            continue
        cin, cout, k = conv
        layers.append((name, nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2)))
        if not _is_last(name):
            if norm:
                layers.append((f"bn_{name}", nn.BatchNorm2d(cout)))
            layers.append((f"relu_{name}", nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


def openpose_key_shapes(
    width: float = 1.0,
    paf_channels: int = OPENPOSE_PAF_CHANNELS,
    heatmap_channels: int = OPENPOSE_HEATMAP_CHANNELS,
    num_stages: int = NUM_OPENPOSE_STAGES,
) -> dict[str, tuple[int, ...]]:
    """Flat key -> shape of the port's ``body_pose_model.pth`` (at ``width=1`` and the default channels).

    Returns:
        Ordered dict ``{"conv1_1.weight": (64, 3, 3, 3), "conv1_1.bias": (64,), ...}`` over stages 1..num_stages.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in _conv_specs(width, paf_channels, heatmap_channels, num_stages).values():
        for name, *conv in spec:
            if conv:
                cin, cout, k = conv
                shapes[f"{name}.weight"] = (cout, cin, k, k)
                shapes[f"{name}.bias"] = (cout,)
    return shapes


class PoseMachine(nn.Module):
    """OpenPose's VGG19 front + CPM stage 1 + stage 2, with a width multiplier.

    Args:
        width: multiplier of every hidden width (1.0 = OpenPose).
        paf_channels: outputs of the L1 branches (OpenPose: 38 = 19 limbs x 2).
        heatmap_channels: outputs of the L2 branches (OpenPose: 19 = 18 parts + background).
        norm: BatchNorm after every hidden convolution, before its ReLU (as Lightweight OpenPose, Osokin 2018; our
            addition for teachers trained from scratch, off in OpenPose and so for its weights).
    """

    def __init__(
        self,
        width: float = 1.0,
        paf_channels: int = OPENPOSE_PAF_CHANNELS,
        heatmap_channels: int = OPENPOSE_HEATMAP_CHANNELS,
        norm: bool = False,
    ) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.width = float(width)
        self.paf_channels = int(paf_channels)
        self.heatmap_channels = int(heatmap_channels)
        self.norm = bool(norm)
        self.backbone_channels = scaled(128, width)
        self.branch_channels = scaled(512, width)
        for block, spec in _conv_specs(width, paf_channels, heatmap_channels, 2).items():
            self.add_module(block, _make_block(spec, norm))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming normal, fan-in) init of the ReLU convs, N(0, 0.01) of the output convs, zero biases.

        PyTorch's default conv init shrinks the signal through the 22 plain ReLU convs, so a network trained from
        scratch first collapses to input-independent near-zero maps; He init keeps the activation scale.
        """
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d):
                if _is_last(name.rsplit(".", 1)[-1]):
                    nn.init.normal_(module.weight, std=0.01)
                else:
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image (B, 3, H, W) -> conv4_4_CPM feature (B, c4, H/8, W/8)."""
        return self.model0(x)

    def stage1_features(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone feature -> both stage-1 branches at conv5_4 (after its ReLU), each (B, c5, h, w)."""
        return self.model1_1[:-1](feature), self.model1_2[:-1](feature)

    def stage1_heads(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """conv5_5 of the L1 (``f1``) and L2 (``f2``) branches -> (heatmaps, PAFs).

        Heatmaps (B, heatmap_channels, h, w) and PAFs (B, paf_channels, h, w).
        """
        return self.model1_2[-1](f2), self.model1_1[-1](f1)

    def stage2(self, heatmap1: torch.Tensor, paf1: torch.Tensor, feature: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stage 2 on concat(stage-1 PAF, stage-1 heatmaps, backbone feature) -> (heatmaps, PAFs).

        The concatenation is in OpenPose's input order.
        """
        x = torch.cat((paf1, heatmap1, feature), 1)
        return self.model2_2(x), self.model2_1(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E on a normalised image: v = concat(L1 conv5_4, L2 conv5_4, conv4_4_CPM), (B, 2 c5 + c4, H/8, W/8)."""
        feature = self.backbone(x)
        return torch.cat((*self.stage1_features(feature), feature), 1)

    def decode(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F: conv5_5 of both stage-1 branches and stage 2 from v -> the stage-2 (heatmaps, pafs)."""
        c5 = self.branch_channels
        heatmap1, paf1 = self.stage1_heads(v[:, :c5], v[:, c5 : 2 * c5])
        return self.stage2(heatmap1, paf1, v[:, 2 * c5 :])

    def forward(self, x: torch.Tensor) -> PoseMachineOutput:
        """The port's forward up to stage 2 on a normalised image (B, 3, H, W)."""
        feature = self.backbone(x)
        heatmap1, paf1 = self.stage1_heads(*self.stage1_features(feature))
        heatmap2, paf2 = self.stage2(heatmap1, paf1, feature)
        return PoseMachineOutput(heatmap1, paf1, heatmap2, paf2)


_PREFIX = re.compile(r"^(module\.)?(model\d+(_\d+)?\.)?")


def _flat_key(key: str) -> str:
    return _PREFIX.sub("", key)


def load_openpose_state_dict(
    model: PoseMachine, path_or_dict: str | Path | dict[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Load the port's ``body_pose_model.pth`` (or a state dict with its keys) into ``model``, strictly.

    Keys may be flat (``conv1_1.weight``, as in the file) or prefixed (``model0.conv1_1.weight``, as in
    ``bodypose_model.state_dict()``; a leading ``module.`` is also accepted). Keys of stages 3-6 are checked for
    shape and then discarded.

    Args:
        model: the :class:`PoseMachine` to load into (its width and channels define the expected shapes).
        path_or_dict: a ``.pth`` path or a ``{key: tensor}`` dict.

    Returns:
        ``{"discarded": [flat keys of stages 3-6 that were dropped]}``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: listing missing, unexpected and shape-mismatched keys.
    """
    if isinstance(path_or_dict, (str, Path)):
        path = Path(path_or_dict)
        if not path.is_file():
            raise FileNotFoundError(f"OpenPose weights file {str(path)!r} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        source = str(path)
    else:
        state, source = path_or_dict, "the given state dict"
    if not isinstance(state, dict):
        raise ValueError(f"{source} must hold a dict of tensors, got {type(state).__name__}")
    expected = openpose_key_shapes(model.width, model.paf_channels, model.heatmap_channels, NUM_OPENPOSE_STAGES)
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        fk = _flat_key(str(key))
        if not torch.is_tensor(value):
            raise ValueError(f"{source}: key {key!r} holds {type(value).__name__}, expected a tensor")
        flat[fk] = value
    own = {_flat_key(k): k for k in model.state_dict()}
    missing = [k for k in own if k not in flat]
    unexpected = [k for k in flat if k not in expected]
    mismatched = [
        f"{k}: got {tuple(v.shape)}, expected {expected[k]}"
        for k, v in flat.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if missing or unexpected or mismatched:

        def _fmt(items: list[str]) -> str:
            return ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "") or "none"

        raise ValueError(
            f"{source} does not match the OpenPose body model (width={model.width}, {model.paf_channels} PAF, "
            f"{model.heatmap_channels} heatmap channels): missing keys: {_fmt(missing)}; unexpected keys: "
            f"{_fmt(unexpected)}; shape mismatches: {_fmt(mismatched)}"
        )
    discarded = [k for k in flat if k not in own]
    model.load_state_dict({own[k]: flat[k] for k in own}, strict=True)
    return {"discarded": discarded}
