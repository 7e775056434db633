"""Byte splits of a text log: which lines a split reads, and what it must know of the bytes before it.

A split reads the lines (for a CSV, the records: :mod:`transforms.csv_records`) that start in its
byte range ``[start, end)``, the last one to its end even past ``end``. A first pass over every
split (:func:`count_newlines`, in parallel) counts its newlines and, for a CSV, its quote-state
transitions; :func:`split_context` turns them into each split's line number and entry state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from transforms import storage
from transforms.csv_records import START, STATES, entry_states, scan, transitions
from transforms.input_splits import InputSplit

BLOCK = 1 << 20


def split_lines(
    reader: BinaryIO, start: int, end: int | None, csv_state: int | None = None
) -> tuple[int, Iterator[bytes], int | None]:
    """``(newlines skipped, lines, limit)``: the lines of ``reader`` that start in ``[start, end)``.

    A line that began before ``start`` belongs to the previous split and is skipped; that skip
    passes one newline, which the line numbering must count. For a CSV, ``csv_state`` is the quote
    state at ``start``: the lines of a record that began before ``start`` are skipped too, and the
    lines run on to the end of the file; ``limit`` is then how many of their bytes hold the starts
    of the split's records (``csv_records.records(lines, limit=limit)`` reads those, the last one to
    its end). Else ``limit`` is None.
    """
    skipped = 0
    position = start
    if start > 0:
        reader.seek(start - 1)
        before = reader.read(1)
        if csv_state is not None and not (before == b"\n" and csv_state == START):
            skipped, position = _skip_to_record(reader, start, csv_state)
        elif csv_state is None and before != b"\n":
            position += len(reader.readline())
            skipped = 1
    if csv_state is not None:
        limit = None if end is None else max(0, end - position)
        return skipped, iter(reader.readline, b""), limit

    def lines() -> Iterator[bytes]:
        nonlocal position
        while end is None or position < end:
            line = reader.readline()
            if not line:
                return
            position += len(line)
            yield line

    return skipped, lines(), None


def _skip_to_record(reader: BinaryIO, start: int, state: int) -> tuple[int, int]:
    """``(newlines passed, position)`` of the first record start after ``start`` (``reader`` is there)."""
    newlines, position = 0, start
    while True:
        block = reader.read(BLOCK)
        if not block:
            return newlines, position
        state, index = scan(block, state, stop_at_record_end=True)
        if index >= 0:
            reader.seek(position + index)
            return newlines + block.count(b"\n", 0, index), position + index
        newlines += block.count(b"\n")
        position += len(block)


def count_newlines(split: InputSplit) -> tuple[tuple[int, int], int, tuple[int, ...] | None]:
    """``((file_index, split number), newlines in the split's byte range, quote transitions)``;
    transitions (``csv_records.transitions``) only for a CSV."""
    key = (split.file_index, split.number)
    if split.format == "parquet":
        return key, 0, None
    csv = split.format == "microlens-csv"
    exits = STATES
    with storage.open_read(split.path) as reader:
        reader.seek(split.start)
        remaining = None if split.end is None else split.end - split.start
        count = 0
        while remaining is None or remaining > 0:
            block = reader.read(BLOCK if remaining is None else min(BLOCK, remaining))
            if not block:
                break
            count += block.count(b"\n")
            if csv:
                exits = transitions(block, exits)
            if remaining is not None:
                remaining -= len(block)
    return key, count, exits if csv else None


def split_context(counts: list) -> dict[tuple[int, int], tuple[int, int | None]]:
    """``(file_index, split) -> (newlines before the split, CSV quote state at its start or None)``
    from every split's :func:`count_newlines`."""
    by_file: dict[int, list] = {}
    for key, count, exits in sorted(counts, key=lambda c: c[0]):
        by_file.setdefault(key[0], []).append((key, count, exits))
    context = {}
    for splits in by_file.values():
        csv = splits[0][2] is not None
        states = entry_states([exits for _, _, exits in splits]) if csv else [None] * len(splits)
        running = 0
        for (key, count, _), state in zip(splits, states, strict=True):
            context[key] = (running, state)
            running += count
    return context
