"""Evaluation cases, per rank and streamed: each rank reads only its users' rows of the sequences table.

The users (rows of the sequences table, parts in the manifest's order) are cut into one contiguous
range per rank: rank ``r`` of ``W`` holds rows ``[U r / W, U (r + 1) / W)``. A rank reads only the
parts (and, within a local part, only the Parquet row groups) that overlap its range, a chunk of rows
at a time, and turns each chunk into leave-one-out cases with array operations (no loop over users):
memory is one row group plus one chunk, whatever the number of users.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dataformat.format import SEQUENCES_TABLE
from trainer import storage
from trainer.dataset import DatasetInfo, TablePart, part_problem
from trainer.errors import REINGEST, DatasetError

SPLITS = {"valid": 2, "test": 1}
"""Split -> how many items from the end the target sits (leave-one-out)."""


@dataclass
class CaseBatch:
    """A batch of users' cases, as tensors."""

    windows: torch.Tensor
    """long ``[B, max_seq_len]``: the last candidate items of each history, right-padded with 0."""
    histories: torch.Tensor
    """long ``[B, H]``: every history item (masked in ranking), right-padded with 0."""
    targets: torch.Tensor
    """long ``[B]``."""


def rank_rows(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """The table rows ``[start, end)`` whose users ``rank`` evaluates."""
    return total * rank // world_size, total * (rank + 1) // world_size


def _read_part(part: TablePart, start: int, end: int) -> Iterator[pa.ListArray]:
    """The ``item_indices`` of rows ``[start, end)`` (part-relative), one row group at a time."""
    remote = storage.scheme_of(part.url) not in ("", "file")
    try:
        if not remote and not storage.exists(part.url):
            raise FileNotFoundError(part.url)
        source = io.BytesIO(storage.read_bytes(part.url)) if remote else storage.local_copy(part.url)[0]
        with pq.ParquetFile(source) as parquet:
            if parquet.metadata.num_rows != part.rows:
                raise DatasetError(
                    f"{part.url} has {parquet.metadata.num_rows} rows, the manifest says {part.rows}; {REINGEST}"
                )
            first = 0
            for group in range(parquet.metadata.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                lo, hi = max(start, first), min(end, first + rows)
                if lo < hi:
                    table = parquet.read_row_group(group, columns=["item_indices"])
                    yield table.column(0).combine_chunks().slice(lo - first, hi - lo)
                first += rows
    except FileNotFoundError:
        raise DatasetError(
            f"{part.url}, a part of the {SEQUENCES_TABLE} table listed in the manifest, is missing; {REINGEST}"
        ) from None
    except (pa.ArrowException, OSError) as err:
        raise part_problem(part.url, SEQUENCES_TABLE, err) from None


def sequence_chunks(dataset: DatasetInfo, start: int, end: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(offsets ``[n + 1]``, items) of the table rows ``[start, end)``, a row group at a time."""
    for part in dataset.sequence_parts:
        lo, hi = max(start, part.first_row), min(end, part.first_row + part.rows)
        if lo >= hi:
            continue
        for column in _read_part(part, lo - part.first_row, hi - part.first_row):
            offsets = column.offsets.to_numpy().astype(np.int64)
            yield offsets - offsets[0], column.flatten().to_numpy().astype(np.int64)


def leave_one_out(
    offsets: np.ndarray, items: np.ndarray, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(history offsets, history items, targets) of the users with a ``split`` target and a non-empty
    history: the target sits ``SPLITS[split]`` items from the end, the history is what comes before."""
    back = SPLITS[split]
    lengths = np.diff(offsets)
    kept = np.flatnonzero(lengths > back)
    starts, history_lengths = offsets[kept], lengths[kept] - back
    targets = items[starts + history_lengths]
    history_offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(history_lengths, out=history_offsets[1:])
    positions = np.arange(history_offsets[-1], dtype=np.int64)
    positions += np.repeat(starts - history_offsets[:-1], history_lengths)
    return history_offsets, items[positions], targets


def padded(offsets: np.ndarray, items: np.ndarray, width: int | None = None) -> torch.Tensor:
    """Rows ``items[offsets[i]:offsets[i + 1]]`` right-padded with 0; with ``width``, each row's last
    ``width`` items only."""
    lengths = np.diff(offsets)
    rows = len(lengths)
    width = width or max(1, int(lengths.max()) if rows else 1)
    row_of = np.repeat(np.arange(rows), lengths)
    column = np.arange(len(items)) - np.repeat(offsets[:-1], lengths)
    column -= np.repeat(np.maximum(lengths - width, 0), lengths)  # keep the last ``width``
    keep = column >= 0
    out = np.zeros((rows, width), dtype=np.int64)
    out[row_of[keep], column[keep]] = items[keep]
    return torch.from_numpy(out)


def input_windows(
    offsets: np.ndarray, items: np.ndarray, max_seq_len: int, candidates: np.ndarray | None = None
) -> torch.Tensor:
    """The model's input ``[B, max_seq_len]``: each history's last items, only candidates when given."""
    if candidates is None:
        return padded(offsets, items, max_seq_len)
    keep = candidates[items]
    kept_before = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return padded(kept_before[offsets], items[keep], max_seq_len)


def case_batches(
    chunks: Iterator[tuple[np.ndarray, np.ndarray]],
    split: str,
    batch_size: int,
    max_seq_len: int,
    candidates: np.ndarray | None = None,
) -> Iterator[CaseBatch]:
    """Batches of at most ``batch_size`` cases from sequence chunks. With ``candidates`` (bool
    ``[N+1]``), the input windows keep only candidate items (histories keep every item)."""
    for offsets, items in chunks:
        history_offsets, history_items, targets = leave_one_out(offsets, items, split)
        for first in range(0, len(targets), batch_size):
            last = min(first + batch_size, len(targets))
            lo, hi = history_offsets[first], history_offsets[last]
            rows = history_offsets[first : last + 1] - lo
            chosen = history_items[lo:hi]
            windows = input_windows(rows, chosen, max_seq_len, candidates)
            yield CaseBatch(windows, padded(rows, chosen), torch.from_numpy(targets[first:last]))


def rank_case_batches(
    dataset: DatasetInfo,
    split: str,
    rank: int,
    world_size: int,
    batch_size: int,
    max_seq_len: int,
    candidates: np.ndarray | None = None,
) -> Iterator[CaseBatch]:
    """This rank's cases of ``split``, in batches, read from the parts holding its users."""
    start, end = rank_rows(sum(part.rows for part in dataset.sequence_parts), rank, world_size)
    return case_batches(sequence_chunks(dataset, start, end), split, batch_size, max_seq_len, candidates)
