"""What every video backbone is: :class:`Backbone`, a registry :class:`Encoder`, and what they share.

A backbone maps float clips ``[n, 3, T, H, W]`` to features ``[n, F]`` (classification head
removed) and lists its blocks from input to output, which the freezing policy and activation
checkpointing (``trainer.models.video_item_encoder``) act on. The builders live by library:
``torchvision_backbones`` and ``hub_backbones`` (pytorchvideo, VideoMAE); the project's own
:class:`TinyVideoNet` is here. ``encoder_registry`` names them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PYTORCHVIDEO_MEAN, PYTORCHVIDEO_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


@dataclass
class Backbone:
    """A feature extractor, its blocks (input to output) and how to rebuild it without weights."""

    module: nn.Module
    feature_dim: int
    block_names: list[str]
    spec: dict
    """JSON-able: ``name``, ``num_frames``, ``frame_size`` (+ ``hf_config`` for Hugging Face nets);
    ``encoder_registry.build_backbone`` rebuilds the same architecture from it (a checkpoint stores it)."""
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    prepare: Callable[[torch.Tensor], object] | None = None
    """Normalised float clips ``[n, 3, T, H, W]`` -> the module's input (default: as is)."""
    readout: Callable[[object], torch.Tensor] | None = None
    """The module's output -> features ``[n, F]`` (default: as is)."""


@dataclass
class Encoder:
    """A registry entry."""

    build: Callable[[dict], Backbone]
    """Spec -> the architecture, randomly initialised."""
    head: tuple[str, ...] = ()
    """Key prefixes of the pretrained classification head, which the backbone drops."""
    key_prefix: str = ""
    """Prefix that maps a pretrained state dict's keys onto the backbone's."""
    weights: dict[str, str] = field(default_factory=dict)
    """Weights name -> download URL (the torch hub cache keeps the URL's file name)."""
    hugging_face: str | None = None
    """Hugging Face model id of the pretrained weights (loaded from a local folder only)."""


TINY_WIDTHS = (8, 16, 32, 64)
"""Stage widths of the ``tiny`` variants (CPU tests, ``gpu_check`` on CPU): same blocks, narrower."""


def is_tiny(spec: dict) -> bool:
    """Whether ``spec`` asks for the ``tiny`` variant (``full`` otherwise; anything else raises)."""
    variant = spec.get("variant", "full")
    if variant not in ("full", "tiny"):
        raise ValueError(f"unknown encoder variant {variant!r}; choose full or tiny")
    return variant == "tiny"


def pad_frames(clips: torch.Tensor, multiple: int) -> torch.Tensor:
    """``[n, C, T, H, W]`` with the last frame repeated until T is a multiple of ``multiple``."""
    missing = -clips.shape[2] % multiple
    if missing:
        clips = torch.cat([clips, clips[:, :, -1:].expand(-1, -1, missing, -1, -1)], dim=2)
    return clips


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


def tiny_backbone(spec: dict) -> Backbone:
    """The registry's ``tiny`` entry: :class:`TinyVideoNet` (64 features)."""
    return Backbone(TinyVideoNet(), 64, ["stem", "layer1", "layer2"], spec)
