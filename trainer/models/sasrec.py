"""SASRec user encoder: item embeddings of a window -> one user state per position.

Self-attentive sequential recommendation (Kang & McAuley, 2018) with learned absolute
positions and a causal mask. Windows are right-padded (item 0 = padding): with a causal
mask a real position then only ever attends to real positions, so no key-padding mask
is needed and no attention row is ever empty.
"""

from __future__ import annotations

import torch
from torch import nn


class SASRec(nn.Module):
    """``[B, L, d]`` item embeddings -> ``[B, L, d]`` user states (state ``t`` predicts item ``t + 1``)."""

    def __init__(
        self, max_seq_len: int, dim: int, num_blocks: int, num_heads: int, ffn_dim: int, dropout: float
    ):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.positions = nn.Embedding(max_seq_len, dim)
        # same scale as the id embeddings: N(0, 1) positions would drown the items after the input norm
        nn.init.normal_(self.positions.weight, std=0.02)
        self.input_norm = nn.LayerNorm(dim)
        self.input_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=num_heads,
            dim_feedforward=ffn_dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers=num_blocks, enable_nested_tensor=False)
        self.register_buffer(
            "causal_mask",
            torch.triu(torch.ones(max_seq_len, max_seq_len, dtype=torch.bool), 1),
            persistent=False,
        )

    def forward(self, item_embeddings: torch.Tensor) -> torch.Tensor:
        length = item_embeddings.shape[1]
        if length > self.max_seq_len:
            raise ValueError(f"sequence of length {length} exceeds max_seq_len {self.max_seq_len}")
        positions = self.positions.weight[:length].unsqueeze(0)
        hidden = self.input_dropout(self.input_norm(item_embeddings + positions))
        return self.blocks(hidden, mask=self.causal_mask[:length, :length], is_causal=True)
