"""Keyed CSV files beside the logs (``--titles``, ``--video-map``), read in byte splits on all workers.

Each is a CSV whose header names an item column and a value column (a title, a video URI). It is
read as a CSV log is (:mod:`transforms.text_splits`: a first pass counts each split's newlines and
quote-state transitions, so a quoted field may hold commas and newlines), one record at a time, so
no worker holds the file: each record becomes ``(item_id, value)``, to be joined with the items
by key (``CoGroupByKey``) downstream. A record that cannot be one is counted in the Beam counter
``<name>_rows_rejected.<reason>`` (``REJECT_REASONS``), which ``run_stats.json`` reports.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import storage
from transforms.csv_records import records
from transforms.input_splits import SPLIT_BYTES, InputSplit
from transforms.read_interactions import spread_splits
from transforms.text_splits import split_lines

ITEM_NAMES = ("item", "item_id")
REJECT_REASONS = ("bad_encoding", "bad_quoting", "missing_field", "empty_item")
REJECTED = "_rows_rejected."  # counter ``<name>_rows_rejected.<reason>``


@dataclass(frozen=True)
class KeyedCsv:
    """What a keyed CSV holds."""

    name: str
    """Its counters' prefix and its name in ``run_stats.json``: ``titles`` or ``video_map``."""
    value_names: tuple[str, ...]
    """Header names the value column may have (case-insensitive)."""
    value_what: str
    """What the value is, in messages (``title``, ``uri``)."""
    resolve_uris: bool = False
    """Values are URIs: a relative one resolves against the file's folder (:func:`csv_folder`)."""


TITLES = KeyedCsv("titles", ("title",), "title")
VIDEO_MAP = KeyedCsv("video_map", ("uri", "video", "path", "url"), "uri", resolve_uris=True)


def keyed_columns(header_line: str, path: str, kind: KeyedCsv) -> tuple[int, int]:
    """``(item column, value column)`` named by a keyed CSV's header line.

    Raises:
        ValueError: the header names no item column or no value column.
    """
    header = [h.strip().lower().lstrip("\ufeff") for h in next(csv.reader([header_line]), [])]
    item = next((header.index(n) for n in ITEM_NAMES if n in header), None)
    value = next((header.index(n) for n in kind.value_names if n in header), None)
    if item is None or value is None:
        raise ValueError(f"{path}: header {header} needs an item column and a {kind.value_what} column")
    return item, value


def csv_folder(path: str) -> str:
    """The folder of a keyed CSV: where its relative URIs resolve (and, for a video map, must stay)."""
    return path.rsplit("/", 1)[0] if "/" in path else "."


def header_columns(path: str, kind: KeyedCsv) -> tuple[int, int]:
    """:func:`keyed_columns` of the file at ``path`` (its first record, from its first 64 KiB)."""
    with storage.open_read(path) as reader:
        head = reader.read(64 * 1024)
    first = next((raw for _, raw, _ in records(head.splitlines(True)) if raw.strip()), b"")
    return keyed_columns(first.decode("utf-8", "replace").rstrip("\r\n"), path, kind)


def keyed_record(text: str, columns: tuple[int, int], kind: KeyedCsv, folder: str) -> tuple[str, str]:
    """``(item_id, value)`` of one record; raises ``ValueError(reason)`` (``missing_field``, ``empty_item``)."""
    fields = next(csv.reader([text]))
    item_column, value_column = columns
    if len(fields) <= max(columns):
        raise ValueError("missing_field")
    item_id = fields[item_column].strip()
    if not item_id:
        raise ValueError("empty_item")
    value = fields[value_column]
    if kind.resolve_uris:
        value = value.strip()
        if not (storage.is_remote(value) or value.startswith("/")):
            value = storage.join(folder, value)
    return item_id, value


def split_records(
    lines, first_line: int, limit: int | None, header_first: bool
) -> Iterator[tuple[str | None, str]]:
    """``(record text or None, reason)`` for each non-blank record after the header (``header_first``:
    the split starts the file, so its first record is the header); reason ``""`` when the text is good."""
    for _, raw, problem in records(lines, first_line, limit):
        stripped = raw.rstrip(b"\r\n")
        if not stripped.strip():
            continue
        if header_first:
            header_first = False
            continue
        if problem:
            yield None, "bad_quoting"
            continue
        try:
            yield stripped.decode("utf-8"), ""
        except UnicodeDecodeError:
            yield None, "bad_encoding"


class _ReadKeyedSplit(beam.DoFn):
    """InputSplit of a keyed CSV -> ``(item_id, value)``; side input: ``split_context``."""

    def __init__(self, kind: KeyedCsv, columns: tuple[int, int]):
        self.kind, self.columns = kind, columns

    def process(self, split: InputSplit, context: dict):
        newlines_before, quote_state = context[(split.file_index, split.number)]
        folder = csv_folder(split.path)
        with storage.open_read(split.path) as reader:
            skipped, lines, limit = split_lines(reader, split.start, split.end, quote_state)
            for text, reason in split_records(lines, 1 + newlines_before + skipped, limit, split.start == 0):
                if text is not None:
                    try:
                        yield keyed_record(text, self.columns, self.kind, folder)
                        continue
                    except ValueError as err:
                        reason = str(err)
                Metrics.counter("videorec", f"{self.kind.name}{REJECTED}{reason}").inc()


class ReadKeyedCsv(beam.PTransform):
    """PBegin -> PCollection[(item_id, value)]: every good record of the keyed CSV at ``path``, read in
    ``split_bytes`` splits in parallel (the header is checked at construction)."""

    def __init__(self, path: str, kind: KeyedCsv, split_bytes: int = SPLIT_BYTES):
        super().__init__()
        self.kind = kind
        self.columns = header_columns(path, kind)
        size = storage.size(path)
        bounds = list(range(0, max(size, 1), split_bytes))
        self.splits = [
            InputSplit(
                0,
                path,
                "microlens-csv",
                number,
                start,
                bounds[number + 1] if number + 1 < len(bounds) else None,
            )
            for number, start in enumerate(bounds)
        ]

    def expand(self, pbegin):
        splits, context = spread_splits(pbegin, self.splits)
        return splits | "ReadRecords" >> beam.ParDo(_ReadKeyedSplit(self.kind, self.columns), context)


def rejected_rows(counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """``{"titles": {reason: n}, "video_map": {...}}`` from the job's counters (only files with rejections)."""
    rejected: dict[str, dict[str, int]] = {}
    for name, count in sorted(counters.items()):
        kind, _, reason = name.partition(REJECTED)
        if reason and count:
            rejected.setdefault(kind, {})[reason] = count
    return rejected
