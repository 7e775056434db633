"""VideoRec: an item encoder (video, id or frozen features) feeding SASRec."""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import ModelConfig
from trainer.models.item_encoders import FrozenFeatureItemEncoder, IdItemEncoder, load_feature_table
from trainer.models.sasrec import SASRec
from trainer.models.video_encoders import VideoItemEncoder, apply_freezing, build_backbone


class VideoRec(nn.Module):
    """Embeds a batch's unique items once, lays them out as user windows and runs SASRec."""

    def __init__(self, item_encoder: nn.Module, user_encoder: SASRec):
        super().__init__()
        self.item_encoder = item_encoder
        self.user_encoder = user_encoder

    @property
    def needs_frames(self) -> bool:
        return self.item_encoder.needs_frames

    def forward(
        self, items: torch.Tensor, unique_items: torch.Tensor, frames: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``items`` ``[B, L+1]`` (0 = pad), ``unique_items`` ``[U]`` sorted -> (states ``[B, L, d]``, ``[U, d]``).

        State ``t`` of a user is computed from ``items[:, :t+1]`` and scores ``items[:, t+1]``.
        """
        item_embeddings = self.item_encoder(unique_items, frames)
        inputs = items[:, :-1]
        slots = torch.searchsorted(unique_items, inputs.clamp(min=1))
        window = item_embeddings[slots.clamp(max=len(unique_items) - 1)]
        window = window * (inputs > 0).unsqueeze(-1).to(window.dtype)
        return self.user_encoder(window), item_embeddings

    def user_states(self, history: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Right-padded histories ``[B, L]`` and all item embeddings ``[N+1, d]`` -> last real states ``[B, d]``."""
        window = item_table[history] * (history > 0).unsqueeze(-1).to(item_table.dtype)
        states = self.user_encoder(window)
        last = (history > 0).sum(dim=1).clamp(min=1) - 1
        return states[torch.arange(len(history), device=history.device), last]

    def recommender_parameters(self) -> list[nn.Parameter]:
        return list(self.user_encoder.parameters()) + self.item_encoder.recommender_parameters()

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.item_encoder.encoder_parameters()


def build_item_encoder(config: ModelConfig, num_items: int) -> nn.Module:
    """The item encoder named by ``config.encoder``."""
    if config.encoder == "id":
        return IdItemEncoder(num_items, config.dim)
    if config.encoder == "frozen":
        if not config.features:
            raise ValueError("--encoder frozen needs --features FEATURES.npy (written by videorec extract)")
        return FrozenFeatureItemEncoder(load_feature_table(config.features, num_items), config.dim)
    backbone = build_backbone(config.encoder, config.encoder_weights)
    apply_freezing(backbone, config.freeze, config.trainable_blocks)
    return VideoItemEncoder(backbone, config.dim, config.activation_checkpointing)


def build_model(config: ModelConfig, num_items: int) -> VideoRec:
    """VideoRec for ``num_items`` items as described by ``config``."""
    user_encoder = SASRec(
        config.max_seq_len, config.dim, config.num_blocks, config.num_heads, config.ffn_dim, config.dropout
    )
    return VideoRec(build_item_encoder(config, num_items), user_encoder)
