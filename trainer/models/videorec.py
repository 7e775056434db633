"""VideoRec: an item encoder (video, id or frozen features) feeding SASRec."""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import ModelConfig
from trainer.models.encoder_registry import build_backbone
from trainer.models.item_encoders import FrozenFeatureItemEncoder, IdItemEncoder, load_feature_table
from trainer.models.sasrec import SASRec
from trainer.models.video_item_encoder import VideoItemEncoder, apply_freezing


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

    def encoder_spec(self) -> dict:
        """What rebuilds this item encoder's architecture without its weights (stored in checkpoints)."""
        return self.item_encoder.spec()


def build_item_encoder(
    config: ModelConfig,
    num_items: int,
    *,
    num_frames: int = 5,
    frame_size: int = 112,
    encoder_spec: dict | None = None,
) -> nn.Module:
    """The item encoder named by ``config.encoder``, for clips of ``num_frames`` x ``frame_size`` px.

    With ``encoder_spec`` (saved in a checkpoint by :meth:`VideoRec.encoder_spec`) the same
    architecture is rebuilt without reading pretrained weights or feature tables: the
    checkpoint's state dict supplies them. Otherwise ``frozen`` / ``top-k`` on a backbone
    without pretrained weights is refused unless ``config.allow_random_backbone``.
    """
    if config.encoder == "id":
        return IdItemEncoder(num_items, config.dim)
    if config.encoder == "frozen":
        if encoder_spec is not None:
            return FrozenFeatureItemEncoder(torch.zeros(encoder_spec["feature_shape"]), config.dim)
        if not config.features:
            raise ValueError("--encoder frozen needs --features FEATURES.npy (written by videorec extract)")
        return FrozenFeatureItemEncoder(load_feature_table(config.features, num_items), config.dim)
    if encoder_spec is not None:
        backbone = build_backbone(config.encoder, spec=encoder_spec)
    else:
        if config.freeze != "all" and not config.encoder_weights and not config.allow_random_backbone:
            raise ValueError(
                f"--freeze {config.freeze} would keep a randomly initialised {config.encoder} backbone "
                "(partly) frozen: pass pretrained --encoder-weights, or --freeze all "
                "(or --allow-random-backbone for an ablation)"
            )
        backbone = build_backbone(
            config.encoder, config.encoder_weights, num_frames=num_frames, frame_size=frame_size
        )
    apply_freezing(backbone, config.freeze, config.trainable_blocks)
    return VideoItemEncoder(
        backbone, config.dim, config.activation_checkpointing, config.activation_budget_gb
    )


def build_videorec(
    config: ModelConfig,
    num_items: int,
    *,
    num_frames: int = 5,
    frame_size: int = 112,
    encoder_spec: dict | None = None,
) -> VideoRec:
    """VideoRec for ``num_items`` items as described by ``config`` (see :func:`build_item_encoder`)."""
    user_encoder = SASRec(
        config.max_seq_len, config.dim, config.num_blocks, config.num_heads, config.ffn_dim, config.dropout
    )
    item_encoder = build_item_encoder(
        config, num_items, num_frames=num_frames, frame_size=frame_size, encoder_spec=encoder_spec
    )
    return VideoRec(item_encoder, user_encoder)
