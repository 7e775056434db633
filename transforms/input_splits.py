"""Input splits: the pieces of the interaction logs that workers parse in parallel, each bounded.

A text log (CSV, TSV, MovieLens) is cut into byte ranges of ``SPLIT_BYTES``; a Parquet file into
slices of at most ``PARQUET_SPLIT_ROWS`` rows of one row group, planned from its footer. Parsing is
:mod:`transforms.interactions`; the newline counts that number a text split's lines are
:mod:`transforms.text_splits`.
"""

from __future__ import annotations

from typing import NamedTuple

from transforms import storage
from transforms.interactions import csv_header_columns

SPLIT_BYTES = 8 * 1024 * 1024  # text files are parsed in splits of this many bytes, in parallel
PARQUET_SPLIT_ROWS = 1 << 18  # most rows of a Parquet split: about what an 8 MiB split of a CSV log holds
PARQUET_ROW_BYTES = 32  # what one Parquet row counts as, in bytes of text (user,item,timestamp)


class InputSplit(NamedTuple):
    """Lines of one input file that start in bytes ``[start, end)``; ``end`` None: to the end of file.
    For a Parquet file: its rows ``[start, end)`` (0-based), all in one row group."""

    file_index: int
    path: str
    format: str
    number: int
    start: int
    end: int | None
    columns: tuple[int, int, int] | None = None
    timestamp_format: str = "unix"


def plan_splits(
    sources: list[tuple[int, str, str]],
    split_bytes: int = SPLIT_BYTES,
    timestamp_format: str = "unix",
    split_rows: int = PARQUET_SPLIT_ROWS,
) -> list[InputSplit]:
    """Cut each text file into ``split_bytes`` splits and each Parquet file into splits of at most
    ``split_rows`` rows of one row group (:func:`parquet_splits`), each to be parsed with
    ``timestamp_format``.

    A CSV's header is parsed here, so a file whose header names no user, item or timestamp
    column fails before the job starts, and every later split knows the columns.
    """
    splits = []
    for file_index, path, fmt in sources:
        if fmt == "parquet":
            splits += parquet_splits(file_index, path, split_rows, timestamp_format)
            continue
        size = storage.size(path)
        columns = None
        if fmt == "microlens-csv":
            columns = csv_header_columns(path)
        bounds = list(range(0, max(size, 1), split_bytes))
        for number, start in enumerate(bounds):
            end = bounds[number + 1] if number + 1 < len(bounds) else None
            splits.append(
                InputSplit(
                    file_index, path, fmt, number, start, end, columns if number else None, timestamp_format
                )
            )
    return splits


def parquet_splits(file_index: int, path: str, split_rows: int, timestamp_format: str) -> list[InputSplit]:
    """A Parquet file's splits, from its footer: each row group, cut into slices of at most
    ``split_rows`` rows (a file without rows: one empty split)."""
    import pyarrow.parquet as pq

    with storage.open_read(path) as reader:
        metadata = pq.ParquetFile(reader).metadata
    splits, first = [], 0
    for group in range(metadata.num_row_groups):
        end = first + metadata.row_group(group).num_rows
        for start in range(first, end, split_rows):
            stop = min(start + split_rows, end)
            splits.append(
                InputSplit(file_index, path, "parquet", len(splits), start, stop, None, timestamp_format)
            )
        first = end
    return splits or [InputSplit(file_index, path, "parquet", 0, 0, 0, None, timestamp_format)]


def text_bytes(splits: list[InputSplit]) -> int:
    """About how many bytes the rows of ``splits`` take as text, which sizes the history shuffle
    (``packed_rows.history_bucket_count``): a text file's size; ``PARQUET_ROW_BYTES`` per Parquet row
    (a compressed file's size says little about its rows)."""
    text_files = {split.path for split in splits if split.format != "parquet"}
    parquet_rows = sum(split.end - split.start for split in splits if split.format == "parquet")
    return sum(storage.size(path) for path in text_files) + parquet_rows * PARQUET_ROW_BYTES
