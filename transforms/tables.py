"""The Parquet tables of a dataset version: ``items.parquet`` and ``sequences.parquet`` (see docs/FORMAT.md)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from transforms import storage
from transforms.item_shards import ItemRow
from transforms.sequences import UserSequence

ITEMS_FILE = "items.parquet"
SEQUENCES_FILE = "sequences.parquet"

ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("item_index", pa.int32()),
        ("title", pa.string()),
        ("popularity", pa.int64()),
        ("shard", pa.string()),
        ("offset", pa.int64()),
        ("size", pa.int64()),
        ("fingerprint", pa.string()),
        ("status", pa.string()),
    ]
)
SEQUENCES_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("user_index", pa.int32()),
        ("item_indices", pa.list_(pa.int32())),
        ("item_ids", pa.list_(pa.string())),
        ("timestamps", pa.list_(pa.int64())),
    ]
)


def items_table(rows: Iterable[ItemRow]) -> pa.Table:
    ordered = sorted(rows, key=lambda r: r.item_index)
    return pa.table(
        {
            "item_id": [r.item_id for r in ordered],
            "item_index": [r.item_index for r in ordered],
            "title": [r.title for r in ordered],
            "popularity": [r.popularity for r in ordered],
            "shard": [r.shard for r in ordered],
            "offset": [r.offset for r in ordered],
            "size": [r.size for r in ordered],
            "fingerprint": [r.source.fingerprint for r in ordered],
            "status": ["ok"] * len(ordered),
        },
        schema=ITEMS_SCHEMA,
    )


def sequences_table(
    sequences: Iterable[UserSequence], user_index: Mapping[str, int], item_index: Mapping[str, int]
) -> pa.Table:
    ordered = sorted(sequences, key=lambda s: user_index[s.user_id])
    return pa.table(
        {
            "user_id": [s.user_id for s in ordered],
            "user_index": [user_index[s.user_id] for s in ordered],
            "item_indices": [[item_index[i] for i in s.item_ids] for s in ordered],
            "item_ids": [list(s.item_ids) for s in ordered],
            "timestamps": [list(s.timestamps) for s in ordered],
        },
        schema=SEQUENCES_SCHEMA,
    )


def encode_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_table(dataset_dir: str, name: str, table: pa.Table) -> dict:
    """Write ``table`` as ``dataset_dir/name``; return ``{"path", "rows", "bytes", "sha256"}``."""
    data = encode_parquet(table)
    sha = storage.write_bytes(storage.join(dataset_dir, name), data)
    return {"path": name, "rows": table.num_rows, "bytes": len(data), "sha256": sha}


def read_table(dataset_dir: str, name: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(storage.join(dataset_dir, name))))
