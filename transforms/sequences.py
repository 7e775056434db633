"""Per-user histories and leave-one-out sequences, as plain functions and the Beam transforms over them.

Ordering: a user's interactions are sorted by ``(timestamp, file_index, row, column)``, so equal
timestamps keep the order they have in the input (files in sorted path order, then line, then
place in a TSV line). Exact duplicates (same user, item and timestamp) keep their first occurrence.

Split: with the full filtered sequence ``s``, ``s[-1]`` is test, ``s[-2]`` validation and ``s[:-2]``
training; the training window is the last ``max_seq_len + 1`` training items.
"""

from __future__ import annotations

import operator
import struct
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.failures import failure
from transforms.item_lookup import ExcludedItems, excluded_items_of
from transforms.new_items import HELD_OUT, hold_out_new_items
from transforms.packed_rows import (
    Interaction,
    batch_histories,
    frame_users,
    pack_row,
    unpack_rows,
    unpack_user_rows,
)

FAILED = "failed"
MIN_SEQUENCE_LENGTH = 3  # one training item, one validation item, one test item


class UserSequence(NamedTuple):
    """A kept user's full time-ordered sequence after filtering."""

    user_id: str
    item_ids: tuple[str, ...]
    timestamps: tuple[int, ...]


def pack_sequence(sequence: UserSequence) -> bytes:
    """A sequence as compact bytes, for shuffles whose grouped values the runner holds in memory."""
    user = sequence.user_id.encode("utf-8")
    items = [item.encode("utf-8") for item in sequence.item_ids]
    return b"".join(
        [
            _SEQUENCE_HEADER.pack(len(user), len(items)),
            user,
            array("I", [len(item) for item in items]).tobytes(),
            array("q", sequence.timestamps).tobytes(),
            *items,
        ]
    )


def unpack_sequence(packed: bytes) -> UserSequence:
    """Invert :func:`pack_sequence`."""
    user_length, count = _SEQUENCE_HEADER.unpack_from(packed)
    position = _SEQUENCE_HEADER.size
    user = packed[position : position + user_length].decode("utf-8")
    position += user_length
    lengths = array("I", packed[position : position + 4 * count])
    position += 4 * count
    times = array("q", packed[position : position + 8 * count])
    position += 8 * count
    items = []
    for length in lengths:
        items.append(packed[position : position + length].decode("utf-8"))
        position += length
    return UserSequence(user, tuple(items), tuple(times))


def sequence_user_id(packed: bytes) -> str:
    """The user ID of a :func:`pack_sequence` record, without unpacking the rest."""
    user_length = _SEQUENCE_HEADER.unpack_from(packed)[0]
    return packed[_SEQUENCE_HEADER.size : _SEQUENCE_HEADER.size + user_length].decode("utf-8")


_SEQUENCE_HEADER = struct.Struct("<II")


def dedupe_history(rows: Iterable[Interaction]) -> tuple[list[Interaction], list[Interaction]]:
    """``(unique rows in time order, exact duplicates)``; the first occurrence of a duplicate is kept."""
    unique, duplicates, seen = [], [], set()
    for row in sorted(rows, key=_POSITION):
        key = (row.item_id, row.timestamp)
        if key in seen:
            duplicates.append(row)
        else:
            seen.add(key)
            unique.append(row)
    unique.sort(key=_TIMESTAMP)  # stable: equal timestamps keep position order (module docstring)
    return unique, duplicates


_POSITION = operator.attrgetter("file_index", "row", "column")
_TIMESTAMP = operator.attrgetter("timestamp")


def effective_min_length(min_user_interactions: int) -> int:
    """Users need at least three items for leave-one-out, whatever the configured minimum."""
    return max(min_user_interactions, MIN_SEQUENCE_LENGTH)


def surviving_rows(history: Sequence[Interaction], excluded_items: Mapping[str, str]) -> list[Interaction]:
    return [row for row in history if row.item_id not in excluded_items]


def row_ids(row: Interaction, source_files: Sequence[str]) -> dict:
    """Failure-record fields that locate a row in its input file."""
    return {
        "file": source_files[row.file_index] if row.file_index < len(source_files) else row.file_index,
        "row": row.row,
        **({"column": row.column} if row.column else {}),
        "user_id": row.user_id,
        "item_id": row.item_id,
        "timestamp": row.timestamp,
    }


def build_sequence(
    user_id: str,
    history: Sequence[Interaction],
    excluded_items: Mapping[str, str],
    min_length: int,
    source_files: Sequence[str] = (),
    new_items: ExcludedItems | None = None,
) -> tuple[UserSequence | None, list[dict]]:
    """Filter one user's deduplicated, ordered history into a sequence.

    Rows of excluded items are dropped with ``item_<reason>``; rows of ``new_items`` other than the
    last remaining row are dropped with ``new_item_held_out`` (:func:`hold_out_new_items`); if fewer
    than ``min_length`` rows remain, the user and those rows are dropped as ``user_too_few_interactions``.
    """
    failures = [
        failure(
            "row",
            "sequence",
            f"item_{excluded_items[row.item_id]}",
            f"item {row.item_id!r} was dropped ({excluded_items[row.item_id]})",
            **row_ids(row, source_files),
        )
        for row in history
        if row.item_id in excluded_items
    ]
    kept, held = hold_out_new_items(surviving_rows(history, excluded_items), new_items)
    failures += [
        failure(
            "row",
            "sequence",
            HELD_OUT,
            f"item {row.item_id!r} is new and this is not the user's test target",
            **row_ids(row, source_files),
        )
        for row in held
    ]
    if len(kept) < min_length:
        message = f"{len(kept)} usable interactions, fewer than the minimum {min_length}"
        failures += [
            failure("row", "sequence", "user_too_few_interactions", message, **row_ids(row, source_files))
            for row in kept
        ]
        failures.append(failure("user", "sequence", "too_few_interactions", message, user_id=user_id))
        return None, failures
    return UserSequence(user_id, tuple(r.item_id for r in kept), tuple(r.timestamp for r in kept)), failures


def train_window(sequence: UserSequence, max_seq_len: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Item IDs and timestamps of the last ``max_seq_len + 1`` training items (everything but the last two)."""
    start = max(0, len(sequence.item_ids) - 2 - (max_seq_len + 1))
    end = len(sequence.item_ids) - 2
    return sequence.item_ids[start:end], sequence.timestamps[start:end]


def users_in_batch(batch: tuple[int, bytes]) -> int:
    return sum(1 for _ in unpack_user_rows(batch[1]))


def batch_sequences(batch: Sequence[bytes]) -> Iterator[UserSequence]:
    """The sequences of a :class:`BuildUserSequences` batch (a tuple of :func:`pack_sequence` bytes)."""
    return map(unpack_sequence, batch)


class _BucketHistories(beam.DoFn):
    def __init__(self, source_files: Sequence[str]):
        self.source_files = list(source_files)
        self.users_seen = Metrics.counter("videorec", "users_seen")

    def process(self, bucket: tuple[int, Iterable[bytes]]):
        by_user: dict[str, list[bytes]] = {}
        for blob in bucket[1]:
            for user_id, packed in unpack_user_rows(blob):
                by_user.setdefault(user_id, []).append(packed)
        histories: dict[str, list[bytes]] = {}
        for user_id in sorted(by_user):
            unique, duplicates = dedupe_history(unpack_rows(user_id, b"".join(by_user.pop(user_id))))
            for row in duplicates:
                yield beam.pvalue.TaggedOutput(
                    FAILED,
                    failure(
                        "row",
                        "dedupe",
                        "duplicate",
                        "same user, item and timestamp as an earlier row",
                        **row_ids(row, self.source_files),
                    ),
                )
            histories[user_id] = [pack_row(row) for row in unique]
        self.users_seen.inc(len(histories))
        if histories:
            yield bucket[0], frame_users(histories)


class GroupIntoHistories(beam.PTransform):
    """(user bucket, blob of users' packed rows) -> history batches ``(user bucket, blob)`` + ``failed``.

    The input is :class:`transforms.read_interactions.ParseSplit`'s: one blob per split and user bucket
    (:func:`transforms.packed_rows.pack_user_rows`). Grouping by bucket, not by user, keeps the
    shuffle to a few large values, so a runner that holds grouped values in memory (the local
    runner does) holds about the packed rows' bytes. A worker regroups one bucket (a few MB) by
    user and emits it as ONE batch element in the same framing: every user of the bucket, in
    user-ID order, with rows time-ordered and deduplicated. Every later per-user step works a batch
    at a time, so Beam's per-element cost is paid per bucket, not per user. Read a batch with
    :func:`transforms.packed_rows.batch_histories`.
    """

    def __init__(self, source_files: Sequence[str]):
        super().__init__()
        self.source_files = source_files

    def expand(self, rows):
        return (
            rows
            | "GroupByUserBucket" >> beam.GroupByKey()
            | "OrderAndDedupe"
            >> beam.ParDo(_BucketHistories(self.source_files)).with_outputs(FAILED, main="histories")
        )


class _BuildSequences(beam.DoFn):
    def __init__(self, min_length: int, source_files: Sequence[str]):
        self.min_length = min_length
        self.source_files = list(source_files)
        self.users_kept = Metrics.counter("videorec", "users_kept")
        self.rows_used = Metrics.counter("videorec", "rows_used")

    def process(self, batch: tuple[int, bytes], excluded_items: Mapping[str, str], new_items=None):
        kept, rows_used = [], 0
        for user_id, rows in batch_histories(batch):
            sequence, failures = build_sequence(
                user_id, rows, excluded_items, self.min_length, self.source_files, new_items
            )
            for record in failures:
                yield beam.pvalue.TaggedOutput(FAILED, record)
            if sequence is not None:
                rows_used += len(sequence.item_ids)
                kept.append(pack_sequence(sequence))
        self.users_kept.inc(len(kept))
        self.rows_used.inc(rows_used)
        if kept:
            yield tuple(kept)


class BuildUserSequences(beam.PTransform):
    """History batches -> sequence batches (main: tuples of :func:`pack_sequence` bytes, one per history
    batch with a kept user; read with :func:`batch_sequences`) + failure dicts (``failed``) for dropped
    rows and users.

    ``excluded_items`` is a PCollection ``(item_id, reason)`` of items removed before splitting
    (too few interactions, video failed...); workers see it as one compact ``ExcludedItems``.
    ``new_items``, when given, is the singleton PCollection of the new-item set
    (:class:`transforms.new_items.ChooseNewItems`).
    """

    def __init__(self, excluded_items, min_length: int, source_files: Sequence[str], new_items=None):
        super().__init__()
        self.excluded_items = excluded_items
        self.min_length = min_length
        self.source_files = source_files
        self.new_items = new_items

    def expand(self, histories):
        excluded = beam.pvalue.AsSingleton(excluded_items_of(self.excluded_items))
        extra = [] if self.new_items is None else [beam.pvalue.AsSingleton(self.new_items)]
        return histories | "FilterAndSplit" >> beam.ParDo(
            _BuildSequences(self.min_length, self.source_files), excluded, *extra
        ).with_outputs(FAILED, main="sequences")
