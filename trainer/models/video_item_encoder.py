"""The video item encoder: a backbone's freezing policy and :class:`VideoItemEncoder`.

:class:`VideoItemEncoder` takes uint8 clips ``[n, T, 3, H, W]`` straight from the loader,
normalises them for its backbone, and projects the features to the model's width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainer.models.backbone import Backbone


def apply_freezing(backbone: Backbone, policy: str, trainable_blocks: int) -> None:
    """``frozen``: nothing trains; ``top-k``: only the last ``trainable_blocks`` blocks; ``all``: everything."""
    if policy not in ("frozen", "top-k", "all"):
        raise ValueError(f"unknown freezing policy {policy!r}; choose frozen, top-k or all")
    if policy == "all":
        return
    backbone.module.requires_grad_(False)
    if policy == "top-k" and trainable_blocks > 0:
        for name in backbone.block_names[-trainable_blocks:]:
            backbone.module.get_submodule(name).requires_grad_(True)


class _Checkpointed(nn.Module):
    """Runs ``block`` under activation checkpointing while training."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        if self.training and torch.is_grad_enabled():
            return checkpoint(self.block, *args, use_reentrant=False, **kwargs)
        return self.block(*args, **kwargs)


def _replace(module: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, new)


class VideoItemEncoder(nn.Module):
    """uint8 clips ``[n, T, 3, H, W]`` -> item embeddings ``[n, d]`` (backbone + Linear)."""

    needs_frames = True

    def __init__(self, backbone: Backbone, dim: int, activation_checkpointing: bool = False):
        super().__init__()
        self.backbone = backbone.module
        if activation_checkpointing:
            for name in backbone.block_names:
                _replace(self.backbone, name, _Checkpointed(self.backbone.get_submodule(name)))
        self.block_names = list(backbone.block_names)
        self.backbone_spec = dict(backbone.spec)
        self._prepare, self._readout = backbone.prepare, backbone.readout
        self.projection = nn.Linear(backbone.feature_dim, dim)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VideoItemEncoder:
        """Frozen blocks stay in eval mode (no dropout, no stochastic depth), and so does every frozen
        batch norm, so normalisation statistics stay as loaded."""
        super().train(mode)
        for name in self.block_names:
            block = self.backbone.get_submodule(name)
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
        return self

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[n, T, 3, H, W]`` -> backbone features ``[n, F]``."""
        clips = (frames.permute(0, 2, 1, 3, 4).float().div_(255) - self.mean) / self.std
        output = self.backbone(self._prepare(clips) if self._prepare else clips)
        return self._readout(output) if self._readout else output

    def forward(self, items: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        if frames is None:
            raise ValueError("a video encoder needs frames; this dataset or batch has none")
        return self.projection(self.features(frames))

    def spec(self) -> dict:
        return self.backbone_spec

    def recommender_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]
