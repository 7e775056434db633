"""The video item encoder: a backbone's freezing policy and :class:`VideoItemEncoder`.

:class:`VideoItemEncoder` takes uint8 clips ``[n, T, 3, H, W]`` straight from the loader,
normalises them for its backbone, and projects the features to the model's width.

Memory: training a backbone keeps every layer's activations of every clip of the step until the
backward pass, so a step's memory grows with its clips (about 150 MB a clip for ``r2plus1d_18`` at
5 x 112 px). The encoder measures what one clip saves (a probe forward, once per clip shape) and,
when a step's clips would save more than the activation budget, encodes them in chunks that fit,
each under activation checkpointing: only the chunk's inputs and outputs stay, and its activations
are recomputed, chunk by chunk, in the backward pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainer.models.backbone import Backbone

log = logging.getLogger(__name__)

CPU_ACTIVATION_BUDGET_GB = 1.0
"""Default activation budget of a training step on the CPU (``--activation-budget-gb``)."""
GPU_ACTIVATION_BUDGET_FRACTION = 0.4
"""Default activation budget on CUDA, as a fraction of the GPU's total memory."""


def activation_budget_bytes(budget_gb: float | None, device: torch.device) -> int:
    """The budget in bytes on ``device``: ``budget_gb`` GB, or the device's default (None); 0: no limit."""
    if budget_gb is not None:
        return int(budget_gb * 1e9)
    if device.type == "cuda":
        return int(GPU_ACTIVATION_BUDGET_FRACTION * torch.cuda.get_device_properties(device).total_memory)
    return int(CPU_ACTIVATION_BUDGET_GB * 1e9)


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


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Batch norms of ``module`` leave their running statistics as they are (momentum 0): a checkpointed
    forward run again in the backward pass must not count its batch a second time."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum


def checkpointed(function: Callable, module: nn.Module, *args, **kwargs):
    """``function(*args, **kwargs)`` under activation checkpointing; the recomputation in the backward
    pass leaves ``module``'s batch-norm running statistics alone."""
    return checkpoint(
        function,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(module)),
        **kwargs,
    )


def checkpoint_block(block: nn.Module) -> None:
    """Run ``block`` under activation checkpointing while training. Its forward is wrapped in place, so
    its parameter names (and a checkpoint's keys) are the same with or without it."""
    plain = block.forward

    def forward(*args, **kwargs):
        if block.training and torch.is_grad_enabled():
            return checkpointed(plain, block, *args, **kwargs)
        return plain(*args, **kwargs)

    block.forward = forward


class VideoItemEncoder(nn.Module):
    """uint8 clips ``[n, T, 3, H, W]`` -> item embeddings ``[n, d]`` (backbone + Linear)."""

    needs_frames = True

    def __init__(
        self,
        backbone: Backbone,
        dim: int,
        activation_checkpointing: bool = False,
        activation_budget_gb: float | None = None,
    ):
        super().__init__()
        self.activation_budget_gb = activation_budget_gb
        self._saved_per_clip: dict[tuple[int, ...], int] = {}
        self._chunk_logged: set[tuple[int, ...]] = set()
        self.backbone = backbone.module
        if activation_checkpointing:
            for name in backbone.block_names:
                checkpoint_block(self.backbone.get_submodule(name))
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
        chunk = self.training_chunk(frames)
        if chunk >= len(frames):
            return self._encode(frames)
        return torch.cat([checkpointed(self._encode, self.backbone, part) for part in frames.split(chunk)])

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(frames))

    def training_chunk(self, frames: torch.Tensor) -> int:
        """How many of ``frames``' clips a training step encodes at a time: all of them unless their
        saved activations would exceed the budget (or nothing is trained through the backbone)."""
        clips = len(frames)
        trains_backbone = any(p.requires_grad for p in self.backbone.parameters())
        if not (self.training and torch.is_grad_enabled() and trains_backbone):
            return clips
        budget = activation_budget_bytes(self.activation_budget_gb, frames.device)
        if budget <= 0:
            return clips
        per_clip = self.saved_bytes_per_clip(frames)
        chunk = max(1, budget // max(1, per_clip))
        if chunk < clips and tuple(frames.shape[1:]) not in self._chunk_logged:
            self._chunk_logged.add(tuple(frames.shape[1:]))
            log.info(
                "encoding at most %d clips at a time in training: a %s clip saves about %.0f MB of "
                "activations, and the budget is %.1f GB (--activation-budget-gb)",
                chunk,
                "x".join(map(str, frames.shape[1:])),
                per_clip / 1e6,
                budget / 1e9,
            )
        return min(clips, chunk)

    def saved_bytes_per_clip(self, frames: torch.Tensor) -> int:
        """Bytes the backward pass keeps of one clip shaped like ``frames``': the distinct activation
        tensors autograd saves, weights left out (measured once per shape by a one-clip probe forward in
        eval mode, whose RNG draws and statistics are not kept)."""
        shape = tuple(frames.shape[1:])
        if shape not in self._saved_per_clip:
            weights = {p.untyped_storage().data_ptr() for p in self.parameters()}
            storages: dict[int, int] = {}

            def pack(tensor: torch.Tensor) -> torch.Tensor:  # each activation once, weights not at all
                storage = tensor.untyped_storage()
                if storage.data_ptr() not in weights:
                    storages[storage.data_ptr()] = storage.nbytes()
                return tensor

            was_training = self.training
            devices = [frames.device] if frames.device.type == "cuda" else []
            try:
                self.eval()
                with (
                    torch.random.fork_rng(devices=devices),
                    torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
                ):
                    self._encode(torch.zeros((1, *shape), dtype=frames.dtype, device=frames.device))
            finally:
                self.train(was_training)
            self._saved_per_clip[shape] = sum(storages.values())
        return self._saved_per_clip[shape]

    def spec(self) -> dict:
        return self.backbone_spec

    def recommender_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]
