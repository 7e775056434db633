"""Resolve ``--data`` to one dataset version and load its manifest and tables.

Everything is found through ``manifest.json`` (see docs/FORMAT.md); the trainer never
guesses shard paths. A dataset root holding ``LATEST`` is resolved once, at start, so
a nightly ingest that moves ``LATEST`` mid-run cannot mix two versions.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainer import storage
from transforms.format import (
    ITEMS_TABLE,
    LATEST_FILE,
    MANIFEST_FILE,
    SEQUENCES_TABLE,
    parse_manifest,
    version_manifest_path,
)

log = logging.getLogger(__name__)


@dataclass
class UserSequences:
    """Every user's full time-ordered item sequence (leave-one-out splits are taken from it)."""

    user_index: np.ndarray
    """int64 [num_users]."""
    offsets: np.ndarray
    """int64 [num_users + 1]: user u's items are ``items[offsets[u]:offsets[u + 1]]``."""
    items: np.ndarray
    """int64 [total interactions]: item indices, concatenated."""

    def __len__(self) -> int:
        return len(self.user_index)

    def sequence(self, row: int) -> np.ndarray:
        return self.items[self.offsets[row] : self.offsets[row + 1]]


@dataclass
class DatasetInfo:
    """One resolved dataset version."""

    root: str
    """Folder URL holding manifest.json."""
    manifest: dict
    popularity: np.ndarray
    """int64 [num_items + 1]: training interactions per item index (index 0 = padding = 0)."""
    sequences: UserSequences

    @property
    def version(self) -> str:
        return str(self.manifest.get("dataset_version", ""))

    @property
    def num_items(self) -> int:
        return int(self.manifest["num_items"])

    @property
    def has_frames(self) -> bool:
        return bool(self.manifest.get("has_frames"))

    @property
    def num_frames(self) -> int:
        return int((self.manifest.get("sampler") or {}).get("num_frames", 0))

    @property
    def max_seq_len(self) -> int:
        return int(self.manifest["max_seq_len"])

    def rare_items(self) -> torch.Tensor:
        """Bool ``[num_items + 1]``: items at or below the median training popularity (the long tail)."""
        counts = self.popularity[1:]
        rare = np.zeros(self.num_items + 1, dtype=bool)
        rare[1:] = counts <= np.median(counts) if len(counts) else False
        return torch.from_numpy(rare)

    def shard_urls(self, kind: str) -> list[str]:
        return [storage.join_url(self.root, shard["path"]) for shard in self.manifest["shards"].get(kind, [])]

    def shard_samples(self, kind: str) -> int:
        return sum(int(shard["samples"]) for shard in self.manifest["shards"].get(kind, []))


def resolve_manifest_url(data: str) -> str:
    """The manifest URL for ``data``: a manifest, a dataset folder, or a root with ``LATEST``."""
    if not data:
        raise ValueError("--data is required: a dataset folder, its manifest.json, or a root holding LATEST")
    if data.endswith(".json"):
        return data
    latest = storage.join_url(data, LATEST_FILE)
    if storage.exists(latest):
        version = storage.read_bytes(latest).decode("utf-8").strip()
        if not version or "/" in version or version.startswith("."):
            raise ValueError(f"{latest}: does not name a dataset version: {version!r}")
        log.info("%s -> version %s", latest, version)
        return storage.join_url(data, version_manifest_path(version))
    manifest = storage.join_url(data, MANIFEST_FILE)
    if not storage.exists(manifest):
        raise FileNotFoundError(f"{data}: neither {manifest} nor {latest} exists")
    return manifest


def _read_table(root: str, manifest: dict, name: str, columns: list[str]) -> pa.Table:
    """Every part of table ``name``, concatenated in the manifest's order (docs/FORMAT.md)."""
    parts = manifest.get("tables", {}).get(name)
    if not isinstance(parts, list):
        raise ValueError(f"{root}: the manifest lists no parts of table {name!r}")
    tables = [
        pq.read_table(io.BytesIO(storage.read_bytes(storage.join_url(root, path))), columns=columns)
        for path in parts
    ]
    return pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.int64()) for c in columns})


def load_dataset(data: str) -> DatasetInfo:
    """Load manifest, item popularity and user sequences of the dataset named by ``data``."""
    manifest_url = resolve_manifest_url(data)
    manifest = parse_manifest(storage.read_bytes(manifest_url), manifest_url)
    root = storage.parent_url(manifest_url)
    num_items = int(manifest["num_items"])

    items = _read_table(root, manifest, ITEMS_TABLE, ["item_index", "popularity"])
    popularity = np.zeros(num_items + 1, dtype=np.int64)
    indices = items.column("item_index").to_numpy().astype(np.int64)
    if len(indices) and (indices.min() < 1 or indices.max() > num_items):
        raise ValueError(f"{root}: the items table has item_index outside 1..{num_items}")
    popularity[indices] = items.column("popularity").to_numpy()

    table = _read_table(root, manifest, SEQUENCES_TABLE, ["user_index", "item_indices"])
    if table.num_rows == 0:
        raise ValueError(f"{root}: the dataset has no users")
    column = table.column("item_indices").combine_chunks()
    sequences = UserSequences(
        user_index=table.column("user_index").to_numpy().astype(np.int64),
        offsets=column.offsets.to_numpy().astype(np.int64) - int(column.offsets[0].as_py()),
        items=column.flatten().to_numpy().astype(np.int64),
    )
    return DatasetInfo(root=root, manifest=manifest, popularity=popularity, sequences=sequences)
