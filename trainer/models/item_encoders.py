"""Item encoders without pixels: the ``id`` baseline and the ``frozen`` feature baseline.

Every item encoder maps item indices (and, for video encoders, their frames) to ``[n, d]``
embeddings; index 0 is padding.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class IdItemEncoder(nn.Module):
    """IDRec: one learned embedding per item index."""

    needs_frames = False

    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=0.02)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, items: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        return self.embedding(items)

    def available(self) -> torch.Tensor:
        """Bool ``[N+1]``: items this encoder can embed (all but padding)."""
        available = torch.ones(
            self.embedding.num_embeddings, dtype=torch.bool, device=self.embedding.weight.device
        )
        available[0] = False
        return available

    def spec(self) -> dict:
        return {"name": "id"}

    def recommender_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        return []


def load_feature_table(path: str, num_items: int) -> torch.Tensor:
    """A ``videorec extract`` table: float32 ``[num_items + 1, F]`` (row 0 padding, NaN rows: items
    without features), read without pickle."""
    table = np.load(path, allow_pickle=False)
    if table.ndim != 2 or table.shape[0] != num_items + 1:
        raise ValueError(f"{path}: feature table has shape {table.shape}, expected ({num_items + 1}, F)")
    return torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32))


class FrozenFeatureItemEncoder(nn.Module):
    """Pre-extracted, fixed item features followed by a trainable projection to d.

    NaN rows of the table (items ``videorec extract`` could not encode) become zeros and the
    items are reported as unavailable, so evaluation never ranks them.
    """

    needs_frames = False

    def __init__(self, features: torch.Tensor, dim: int):
        super().__init__()
        missing = features.isnan().any(dim=1)
        missing[0] = True
        self.register_buffer("features", torch.nan_to_num(features, nan=0.0))
        self.register_buffer("missing", missing)
        self.projection = nn.Linear(features.shape[1], dim)

    def available(self) -> torch.Tensor:
        """Bool ``[N+1]``: items with extracted features."""
        return ~self.missing

    def spec(self) -> dict:
        return {"name": "frozen", "feature_shape": list(self.features.shape)}

    def forward(self, items: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        return self.projection(self.features[items])

    def recommender_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        return []
