"""The Parquet tables of a dataset version, each written in parts, one per bucket (see docs/FORMAT.md).

A table named ``NAME`` is the files ``tables/NAME/part-BBBBB.parquet`` the manifest lists under
``tables.NAME``; rows are in index order within a part, and parts in bucket order.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from dataformat.format import (
    ITEMS_SCHEMA,
    SCHEMAS,
    SEQUENCES_SCHEMA,
    table_part_path,
)
from transforms import storage


def items_table(rows: Iterable) -> pa.Table:
    """The items table of ``ItemRow``s (see transforms.item_shards)."""
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


def sequences_table(rows: Iterable[tuple[str, int, list[int], tuple[str, ...], tuple[int, ...]]]) -> pa.Table:
    """The sequences table of ``(user_id, user_index, item_indices, item_ids, timestamps)`` rows."""
    ordered = sorted(rows, key=lambda r: r[1])
    return pa.table(
        {
            "user_id": [r[0] for r in ordered],
            "user_index": [r[1] for r in ordered],
            "item_indices": [list(r[2]) for r in ordered],
            "item_ids": [list(r[3]) for r in ordered],
            "timestamps": [list(r[4]) for r in ordered],
        },
        schema=SEQUENCES_SCHEMA,
    )


def encode_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_table_part(dataset_dir: str, table: str, bucket: int, data: pa.Table) -> dict:
    """Write one part of ``table``; return ``{"table", "path", "rows", "bytes", "sha256"}``."""
    encoded = encode_parquet(data)
    path = table_part_path(table, bucket)
    sha = storage.write_bytes(storage.join(dataset_dir, path), encoded)
    return {"table": table, "path": path, "rows": data.num_rows, "bytes": len(encoded), "sha256": sha}


def read_table(dataset_dir: str, manifest: Mapping, table: str, columns: list[str] | None = None) -> pa.Table:
    """Every part of ``table`` of the dataset at ``dataset_dir``, concatenated in the manifest's order."""
    schema = SCHEMAS[table]
    parts = [
        pq.read_table(io.BytesIO(storage.read_whole_file(storage.join(dataset_dir, path))), columns=columns)
        for path in manifest["tables"][table]
    ]
    if not parts:
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    return pa.concat_tables(parts)
