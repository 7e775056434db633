"""Video item encoders: a registry of backbones, a projection to d and a freezing policy.

Each registry entry builds a backbone mapping float clips ``[n, 3, T, H, W]`` to
features ``[n, F]`` and lists its blocks from input to output, which the freezing
policy (``frozen`` / ``top-k`` / ``all``) and activation checkpointing act on.
:class:`VideoItemEncoder` takes uint8 clips ``[n, T, 3, H, W]`` straight from the loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint

KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A feature extractor and the names of its blocks, input to output."""

    module: nn.Module
    feature_dim: int
    block_names: list[str]
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD


class TinyVideoNet(nn.Module):
    """A 3-block 3D CNN for CPU tests and demos (about 30k parameters)."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin: int, cout: int, temporal: int) -> nn.Sequential:
            conv = nn.Conv3d(cin, cout, (temporal, 3, 3), stride=(1, 2, 2), padding=(temporal // 2, 1, 1))
            return nn.Sequential(conv, nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

        self.stem = block(3, width, 1)
        self.layer1 = block(width, 2 * width, 3)
        self.layer2 = block(2 * width, 4 * width, 3)
        self.pool = nn.AdaptiveAvgPool3d(1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layer2(self.layer1(self.stem(clips)))).flatten(1)


class PerFrameImageNet(nn.Module):
    """An image backbone applied to every frame, features averaged over time."""

    def __init__(self, image_net: nn.Module):
        super().__init__()
        self.image_net = image_net

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(n * t, c, h, w)
        return self.image_net(frames).view(n, t, -1).mean(dim=1)


def _torchvision_video(name: str, head: str, feature_dim: int, blocks: list[str]):
    def build(weights: str | None) -> Backbone:
        model = getattr(torchvision.models.video, name)(weights=weights)
        setattr(model, head, nn.Identity())
        return Backbone(model, feature_dim, blocks)

    return build


def _per_frame(name: str, feature_dim: int):
    def build(weights: str | None) -> Backbone:
        model = getattr(torchvision.models, name)(weights=weights)
        model.fc = nn.Identity()
        blocks = ["conv1", "layer1", "layer2", "layer3", "layer4"]
        return Backbone(
            PerFrameImageNet(model),
            feature_dim,
            [f"image_net.{b}" for b in blocks],
            IMAGENET_MEAN,
            IMAGENET_STD,
        )

    return build


def _tiny(weights: str | None) -> Backbone:
    if weights:
        raise ValueError("the tiny encoder has no pretrained weights; pass a .pt state dict instead")
    return Backbone(TinyVideoNet(), 64, ["stem", "layer1", "layer2"])


_RESNET3D_BLOCKS = ["stem", "layer1", "layer2", "layer3", "layer4"]
ENCODERS: dict[str, Callable[[str | None], Backbone]] = {
    "tiny": _tiny,
    "r3d_18": _torchvision_video("r3d_18", "fc", 512, _RESNET3D_BLOCKS),
    "r2plus1d_18": _torchvision_video("r2plus1d_18", "fc", 512, _RESNET3D_BLOCKS),
    "mc3_18": _torchvision_video("mc3_18", "fc", 512, _RESNET3D_BLOCKS),
    "s3d": _torchvision_video("s3d", "classifier", 1024, [f"features.{i}" for i in range(16)]),
    "mvit_v2_s": _torchvision_video(
        "mvit_v2_s", "head", 768, ["conv_proj"] + [f"blocks.{i}" for i in range(16)] + ["norm"]
    ),
    "swin3d_t": _torchvision_video(
        "swin3d_t", "head", 768, ["patch_embed"] + [f"features.{i}" for i in range(7)] + ["norm"]
    ),
    "resnet18": _per_frame("resnet18", 512),
    "resnet50": _per_frame("resnet50", 2048),
}
"""Encoder name -> builder taking a torchvision weights name (or None)."""


class _Checkpointed(nn.Module):
    """Runs ``block`` under activation checkpointing while training."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, *args):
        if self.training and torch.is_grad_enabled():
            return checkpoint(self.block, *args, use_reentrant=False)
        return self.block(*args)


def _get(module: nn.Module, dotted: str) -> nn.Module:
    return module.get_submodule(dotted)


def _replace(module: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, new)


def build_backbone(name: str, weights: str | None = None) -> Backbone:
    """The named backbone; ``weights`` is a local ``.pt`` state dict or a torchvision weights name."""
    if name not in ENCODERS:
        raise ValueError(f"unknown video encoder {name!r}; choose from {sorted(ENCODERS)} (or id / frozen)")
    is_file = bool(weights) and weights.endswith((".pt", ".pth"))
    backbone = ENCODERS[name](None if is_file else weights)
    if is_file:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = backbone.module.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(backbone.module.state_dict()):
            raise ValueError(
                f"{weights}: does not match encoder {name!r} (unexpected keys: {unexpected[:5]})"
            )
    return backbone


def apply_freezing(backbone: Backbone, policy: str, trainable_blocks: int) -> None:
    """``frozen``: nothing trains; ``top-k``: only the last ``trainable_blocks`` blocks; ``all``: everything."""
    if policy not in ("frozen", "top-k", "all"):
        raise ValueError(f"unknown freezing policy {policy!r}; choose frozen, top-k or all")
    if policy == "all":
        return
    backbone.module.requires_grad_(False)
    if policy == "top-k" and trainable_blocks > 0:
        for name in backbone.block_names[-trainable_blocks:]:
            _get(backbone.module, name).requires_grad_(True)


class VideoItemEncoder(nn.Module):
    """uint8 clips ``[n, T, 3, H, W]`` -> item embeddings ``[n, d]`` (backbone + Linear)."""

    needs_frames = True

    def __init__(self, backbone: Backbone, dim: int, activation_checkpointing: bool = False):
        super().__init__()
        self.backbone = backbone.module
        if activation_checkpointing:
            for name in backbone.block_names:
                _replace(self.backbone, name, _Checkpointed(_get(self.backbone, name)))
        self.block_names = list(backbone.block_names)
        self.projection = nn.Linear(backbone.feature_dim, dim)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VideoItemEncoder:
        """Frozen blocks stay in eval mode, so their normalisation statistics stay as loaded."""
        super().train(mode)
        for name in self.block_names:
            block = _get(self.backbone, name)
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        return self

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        clips = frames.permute(0, 2, 1, 3, 4).float().div_(255)
        return self.backbone((clips - self.mean) / self.std)

    def forward(self, items: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        if frames is None:
            raise ValueError("a video encoder needs frames; this dataset or batch has none")
        return self.projection(self.features(frames))

    def recommender_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]
