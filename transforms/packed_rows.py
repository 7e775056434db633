"""Interactions as compact bytes: what the history shuffle moves, and how many user buckets it uses.

A row travels without its user ID (:func:`pack_row`); a split's rows travel grouped by user and
users grouped by bucket, one blob per split and bucket (:func:`pack_user_rows`). After the shuffle
a history bucket travels on as one blob in the same framing (:func:`frame_users`), read back user by
user (:func:`unpack_user_rows`) or as item IDs alone (:func:`batch_user_items`). No Beam here.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import NamedTuple

from transforms.buckets import bucket_of


class Interaction(NamedTuple):
    """One valid interaction. ``file_index, row, column`` is its unique position in the input."""

    user_id: str
    item_id: str
    timestamp: int
    file_index: int
    row: int
    column: int = 0


def pack_row(row: Interaction) -> bytes:
    """An interaction without its user, as compact bytes (what moves through the shuffle)."""
    item = row.item_id.encode("utf-8")
    return _ROW.pack(row.timestamp, row.file_index, row.row, row.column, len(item)) + item


def unpack_rows(user_id: str, packed: bytes) -> list[Interaction]:
    """The interactions of ``user_id`` from concatenated :func:`pack_row` records."""
    rows, position = [], 0
    while position < len(packed):
        timestamp, file_index, row, column, length = _ROW.unpack_from(packed, position)
        position += _ROW.size
        item = packed[position : position + length].decode("utf-8")
        position += length
        rows.append(Interaction(user_id, item, timestamp, file_index, row, column))
    return rows


_ROW = struct.Struct("<qiqiI")


def pack_user_rows(by_user: dict[str, list[bytes]], buckets: int) -> dict[int, bytes]:
    """``{user bucket: blob}``: each user's packed rows, framed by user ID, in one blob per bucket.

    Users go to bucket ``stable_hash(user_id) % buckets``; read a blob with :func:`unpack_user_rows`.
    """
    blobs: dict[int, list[bytes]] = {}
    for user_id in sorted(by_user):
        blobs.setdefault(bucket_of(user_id, buckets), []).extend(_framed(user_id, by_user[user_id]))
    return {bucket: b"".join(parts) for bucket, parts in sorted(blobs.items())}


def frame_users(by_user: dict[str, list[bytes]]) -> bytes:
    """One blob of every user's packed rows, framed by user ID in user-ID order (no bucketing)."""
    return b"".join(part for user_id in sorted(by_user) for part in _framed(user_id, by_user[user_id]))


def _framed(user_id: str, packed_rows: list[bytes]) -> list[bytes]:
    user = user_id.encode("utf-8")
    rows = b"".join(packed_rows)
    return [_USER_FRAME.pack(len(user), len(rows)), user, rows]


def batch_histories(batch: tuple[int, bytes]) -> Iterator[tuple[str, list[Interaction]]]:
    """``(user_id, rows)`` of each user of a history batch ``(bucket, blob)`` (:func:`frame_users`)."""
    for user_id, packed in unpack_user_rows(batch[1]):
        yield user_id, unpack_rows(user_id, packed)


def batch_item_ids(blob: bytes) -> Iterator[str]:
    """The item ID of every row in a :func:`pack_user_rows` blob, without building rows."""
    for items in batch_user_items(blob):
        yield from items


def batch_user_items(blob: bytes) -> Iterator[list[str]]:
    """Each framed user's item IDs, in row order, from a :func:`pack_user_rows` blob (no rows built)."""
    position, end = 0, len(blob)
    frame, row, row_size = _USER_FRAME.unpack_from, _ROW.unpack_from, _ROW.size
    while position < end:
        user_length, rows_length = frame(blob, position)
        position += _USER_FRAME.size + user_length
        rows_end = position + rows_length
        items = []
        while position < rows_end:
            length = row(blob, position)[4]
            position += row_size
            items.append(blob[position : position + length].decode("utf-8"))
            position += length
        yield items


def unpack_user_rows(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """``(user_id, packed rows)`` of each user framed in a :func:`pack_user_rows` blob."""
    position = 0
    while position < len(blob):
        user_length, rows_length = _USER_FRAME.unpack_from(blob, position)
        position += _USER_FRAME.size
        user_id = blob[position : position + user_length].decode("utf-8")
        position += user_length
        yield user_id, blob[position : position + rows_length]
        position += rows_length


_USER_FRAME = struct.Struct("<II")

# Input bytes per user bucket of the history shuffle: a bucket's rows are regrouped by user in one
# worker's memory (a few MB), and the shuffle moves one value per split and bucket, not per user.
HISTORY_BUCKET_BYTES = 2 * 1024 * 1024


def history_bucket_count(input_bytes: int) -> int:
    """User buckets for the history shuffle, from the input's size as text (``input_splits.text_bytes``;
    never from the worker count)."""
    return max(1, math.ceil(input_bytes / HISTORY_BUCKET_BYTES))
