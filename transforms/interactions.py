"""Interaction logs in, validated rows out.

Supported formats (``FORMATS``):

- ``microlens-csv``: CSV with a header naming the user, item and timestamp columns
  (``user,item,timestamp``; ``user_id``/``userId``, ``item_id``/``movieId``... are accepted too).
- ``microlens-tsv``: ``user<TAB>item item item ...`` in time order, no timestamps; an item's
  timestamp is its position in the line (0, 1, 2...).
- ``parquet``: columns named as for CSV; timestamps integer.
- ``movielens``: MovieLens ``u.data``, ``user<TAB>item<TAB>rating<TAB>unix_ts``, no header.

Every row gets a position ``(file_index, row, column)``: files in sorted path order, the 1-based
line number (Parquet: row index + 1) and, for TSV, the item's place in the line. Positions are
unique, so they break timestamp ties deterministically. A row that fails validation becomes a
failure record (stage ``read``) with one of the reasons in ``ROW_REASONS``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator

from transforms import storage
from transforms.csv_records import records
from transforms.failures import failure
from transforms.packed_rows import Interaction
from transforms.timestamps import convert_timestamp

FORMATS = ("microlens-csv", "microlens-tsv", "parquet", "movielens")
ROW_REASONS = ("missing_field", "bad_timestamp", "empty_user", "empty_item", "bad_encoding", "bad_quoting")

USER_COLUMNS = ("user", "user_id", "userid", "uid")
ITEM_COLUMNS = ("item", "item_id", "itemid", "movieid", "video", "video_id")
TIME_COLUMNS = ("timestamp", "time", "ts", "unix_ts")


class RowError(ValueError):
    """A row that cannot become an :class:`Interaction`; ``reason`` is one of ``ROW_REASONS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def unreadable_encoding(path: str, head: bytes) -> str | None:
    """Why a text log whose first bytes are ``head`` cannot be read as UTF-8 text, or None:
    gzip-compressed, or UTF-16 / UTF-32 (a byte-order mark, or NUL bytes between the characters)."""
    if head.startswith(b"\x1f\x8b"):
        return f"{path} is gzip-compressed; decompress it first (gunzip -k {path}) and give the result"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head[:200].count(b"\x00") > 20:
        return (
            f"{path} is UTF-16 or UTF-32 text, not UTF-8; convert it first "
            f"(iconv -f UTF-16 -t UTF-8 {path} > converted.csv)"
        )
    return None


def detect_format(path: str, head: bytes) -> str:
    """Guess the format of ``path`` from its extension and first line (``head``: its first bytes)."""
    lower = path.lower()
    parquet = lower.endswith((".parquet", ".pq")) or head.startswith(b"PAR1")
    problem = None if parquet else unreadable_encoding(path, head)
    if problem:
        raise ValueError(problem)
    if lower.endswith((".parquet", ".pq")) or head.startswith(b"PAR1"):
        return "parquet"
    first_line = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip("\r\ufeff")
    if lower.endswith(".csv"):
        return "microlens-csv"
    fields = first_line.split("\t")
    if len(fields) == 4 and all(f.strip().lstrip("-").replace(".", "", 1).isdigit() for f in fields):
        return "movielens"
    if lower.endswith(".tsv") or len(fields) == 2:
        return "microlens-tsv"
    if "," in first_line:
        return "microlens-csv"
    raise ValueError(
        f"cannot tell the format of {path} from its name or first line {first_line[:80]!r}; "
        f"pass --format with one of {', '.join(FORMATS)}"
    )


def parse_timestamp(text: str) -> int:
    """An integer timestamp from ``text``; integral floats (``"881250949.0"``) are accepted."""
    value = text.strip()
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        raise RowError("bad_timestamp", f"timestamp {value!r} is not a number") from None
    if not number.is_integer():
        raise RowError("bad_timestamp", f"timestamp {value!r} is not an integer")
    return int(number)


def make_interaction(
    user: object,
    item: object,
    timestamp: object,
    position: tuple[int, int, int],
    timestamp_format: str = "unix",
):
    """Validate one row's fields; return an :class:`Interaction` or raise :class:`RowError`.

    ``timestamp`` is read as ``timestamp_format`` (``transforms.timestamps``)."""
    user_id = "" if user is None else str(user).strip()
    item_id = "" if item is None else str(item).strip()
    if not user_id:
        raise RowError("empty_user", "user ID is empty")
    if not item_id:
        raise RowError("empty_item", "item ID is empty")
    if timestamp is None or (isinstance(timestamp, str) and not timestamp.strip()):
        raise RowError("bad_timestamp", "timestamp is empty")
    if timestamp_format == "unix":
        ts = timestamp if isinstance(timestamp, int) else parse_timestamp(str(timestamp))
    else:
        try:
            ts = convert_timestamp(timestamp, timestamp_format)
        except ValueError as err:
            raise RowError("bad_timestamp", str(err)) from None
    if not -(2**63) <= ts < 2**63:  # what the packed rows and tables hold: a row fault, never a job crash
        raise RowError("bad_timestamp", f"timestamp {str(timestamp).strip()[:40]!r} is out of range (64-bit)")
    return Interaction(user_id, item_id, ts, *position)


def find_column(header: list[str], names: tuple[str, ...], what: str, path: str) -> int:
    normalised = [h.strip().lower().lstrip("\ufeff") for h in header]
    for name in names:
        if name in normalised:
            return normalised.index(name)
    raise ValueError(f"{path}: header {header} has no {what} column (expected one of {names})")


def _decoded_lines(lines: Iterable[bytes], first_line: int = 1) -> Iterator[tuple[int, str | None, bytes]]:
    """``(line_number, text or None if not UTF-8, raw)`` for each non-blank line."""
    for number, raw in enumerate(lines, start=first_line):
        stripped = raw.rstrip(b"\r\n")
        if not stripped.strip():
            continue
        try:
            yield number, stripped.decode("utf-8"), stripped
        except UnicodeDecodeError:
            yield number, None, stripped


class HeaderError(ValueError):
    """A CSV header that names its columns in a way the reader cannot use; the message says the fix."""


def csv_columns(header_line: str, path: str) -> tuple[int, int, int]:
    """Positions of the user, item and timestamp columns named by a CSV header line.

    Raises:
        HeaderError: a name appears twice (which one is meant is unknown), or the header is
            tab-separated (a ``.csv`` log written with tabs).
        ValueError: a column is missing.
    """
    header = next(csv.reader([header_line]))
    if len(header) == 1 and len(header_line.split("\t")) >= 3:
        raise HeaderError(
            f"{path}: header {header_line.strip()!r} looks tab-separated, and a .csv log is read with "
            f"commas; convert it first, e.g. tr '\\t' ',' < {path} > commas.csv (if no field holds a "
            "comma), and pass commas.csv"
        )
    names = [h.strip().lower().lstrip("\ufeff") for h in header]
    twice = next((name for k, name in enumerate(names) if name and name in names[:k]), None)
    if twice is not None:
        first, second = [k + 1 for k, name in enumerate(names) if name == twice][:2]
        raise HeaderError(
            f"{path}: header {header} names column {twice!r} twice (columns {first} and {second}); "
            "name each column once"
        )
    return tuple(
        find_column(header, names, what, path)
        for names, what in ((USER_COLUMNS, "user"), (ITEM_COLUMNS, "item"), (TIME_COLUMNS, "timestamp"))
    )


def csv_header_columns(path: str) -> tuple[int, int, int]:
    """:func:`csv_columns` of the CSV log at ``path``, from its first non-blank line.

    Raises:
        ValueError: the file is empty, or its header is wrong (:func:`csv_columns`).
    """
    header = next((line for _, line, _ in _decoded_lines(read_head(path).splitlines(True)) if line), None)
    if header is None:
        raise ValueError(f"{path}: the file is empty; expected a CSV header naming user, item and timestamp")
    return csv_columns(header, path)


def parse_text(
    lines: Iterable[bytes],
    fmt: str,
    file_index: int,
    path: str,
    first_line: int = 1,
    columns: tuple[int, int, int] | None = None,
    timestamp_format: str = "unix",
    limit: int | None = None,
) -> Iterator[Interaction | dict]:
    """Interactions and failure records from lines of one text file, in file order.

    ``first_line`` is the line number of the first of ``lines``. A CSV's first non-blank record is
    its header unless ``columns`` (from :func:`csv_columns`) are given, as they are for later
    splits; with ``limit`` only the CSV records starting in the first ``limit`` bytes are read
    (``transforms.text_splits.split_lines``). Timestamps are read as ``timestamp_format``
    (``transforms.timestamps``).
    """
    if fmt == "microlens-csv":
        return _parse_csv(lines, file_index, path, first_line, columns, timestamp_format, limit)
    return _parse_lines(lines, fmt, file_index, path, first_line, timestamp_format)


def _parse_lines(lines, fmt: str, file_index: int, path: str, first_line: int, timestamp_format: str):
    """:func:`parse_text` for the tab-separated formats: one line, one row (or a user's rows)."""
    for number, text, raw in _decoded_lines(lines, first_line):
        where = {"file": path, "row": number}
        if text is None:
            yield failure("row", "read", "bad_encoding", "line is not UTF-8", **where, text=repr(raw))
            continue
        try:
            yield from _parse_line(text, fmt, (file_index, number), timestamp_format)
        except RowError as err:
            yield failure("row", "read", err.reason, str(err), **where, text=text)


def _parse_csv(lines, file_index: int, path: str, first_line: int, columns, timestamp_format: str, limit):
    """:func:`parse_text` for a CSV: one row per record (``transforms.csv_records``: a quoted field may
    hold newlines; the record's row is the line it starts on)."""
    for number, raw, problem in records(lines, first_line, limit):
        where = {"file": path, "row": number}
        stripped = raw.rstrip(b"\r\n")
        if not stripped.strip():
            continue
        if problem:
            yield failure("row", "read", "bad_quoting", problem, **where, text=repr(stripped[:200]))
            continue
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError:
            yield failure("row", "read", "bad_encoding", "line is not UTF-8", **where, text=repr(stripped))
            continue
        if columns is None:
            columns = csv_columns(text, path)
            continue
        try:
            yield _csv_row(text, columns, (file_index, number, 0), timestamp_format)
        except RowError as err:
            yield failure("row", "read", err.reason, str(err), **where, text=text)


def _csv_row(text: str, columns, position: tuple[int, int, int], timestamp_format: str) -> Interaction:
    fields = text.split(",") if '"' not in text else next(csv.reader([text]))  # same fields, 10x faster
    if len(fields) <= max(columns):
        raise RowError("missing_field", f"expected at least {max(columns) + 1} fields, got {len(fields)}")
    user_column, item_column, time_column = columns
    return make_interaction(
        fields[user_column], fields[item_column], fields[time_column], position, timestamp_format
    )


def _parse_line(
    text: str, fmt: str, position: tuple[int, int], timestamp_format: str = "unix"
) -> Iterator[Interaction]:
    """The interactions of one line of a tab-separated format (a CSV line is :func:`_csv_row`'s)."""
    file_index, number = position
    if fmt == "movielens":
        fields = text.split("\t")
        if len(fields) != 4:
            raise RowError("missing_field", f"expected 4 tab-separated fields, got {len(fields)}")
        yield make_interaction(fields[0], fields[1], fields[3], (file_index, number, 0), timestamp_format)
    elif fmt == "microlens-tsv":
        fields = text.split("\t")
        if len(fields) != 2:
            raise RowError(
                "missing_field", f"expected user<TAB>items, got {len(fields)} tab-separated fields"
            )
        items = fields[1].split()
        if not items:
            raise RowError("empty_item", "the line lists no items")
        user = make_interaction(fields[0], items[0], 0, (file_index, number, 0)).user_id
        for column, item in enumerate(items):
            yield Interaction(user, item, column, file_index, number, column)
    else:
        raise ValueError(f"unknown text format {fmt!r}")


PARQUET_BATCH_ROWS = 1 << 16  # a Parquet file is read in batches of this many rows
PARQUET_BUFFER_BYTES = 1 << 20  # and its column chunks through buffers of this size, never whole


def parse_parquet(
    reader, file_index: int, path: str, timestamp_format: str = "unix", rows: tuple[int, int] | None = None
) -> Iterator[Interaction | dict]:
    """Interactions and failure records from one Parquet file, in row order, a batch at a time.

    ``rows``: only the rows ``[first, end)`` of the file (0-based; a split's, :func:`plan_splits`),
    read from the row groups that hold them; None: every row. Memory: one batch of
    ``PARQUET_BATCH_ROWS`` rows and a buffer of ``PARQUET_BUFFER_BYTES`` per column.
    """
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(reader, buffer_size=PARQUET_BUFFER_BYTES)
    names = parquet.schema_arrow.names
    columns = [
        names[find_column(names, aliases, what, path)]
        for aliases, what in ((USER_COLUMNS, "user"), (ITEM_COLUMNS, "item"), (TIME_COLUMNS, "timestamp"))
    ]
    first, end = rows if rows is not None else (0, parquet.metadata.num_rows)
    groups, offset = row_groups_holding(parquet.metadata, first, end)
    if not groups:
        return
    for batch in parquet.iter_batches(PARQUET_BATCH_ROWS, row_groups=groups, columns=columns):
        low, high = max(first - offset, 0), min(end - offset, batch.num_rows)
        number = offset + low  # rows are numbered from 1: row index + 1
        offset += batch.num_rows
        if high > low:
            part = batch.slice(low, high - low)
            users, items, times = (part.column(i).to_pylist() for i in range(3))
            for user, item, ts in zip(users, items, times, strict=True):
                number += 1
                try:
                    yield make_interaction(user, item, ts, (file_index, number, 0), timestamp_format)
                except RowError as err:
                    yield failure(
                        "row",
                        "read",
                        err.reason,
                        str(err),
                        file=path,
                        row=number,
                        text=repr((user, item, ts)),
                    )
        if offset >= end:
            return


def row_groups_holding(metadata, first: int, end: int) -> tuple[list[int], int]:
    """``(row groups holding rows [first, end) of a Parquet file, the row index of the first one's
    first row)``, from the file's metadata."""
    groups, start, group_start = [], 0, 0
    for group in range(metadata.num_row_groups):
        size = metadata.row_group(group).num_rows
        if start < end and start + size > first:
            group_start = start if not groups else group_start
            groups.append(group)
        start += size
    return groups, group_start


def read_head(path: str, size: int = 4096) -> bytes:
    with storage.open_read(path) as reader:
        return reader.read(size)


def resolve_inputs(pattern: str, fmt: str | None) -> list[tuple[int, str, str]]:
    """``(file_index, path, format)`` for each file matching ``pattern`` (comma-separated globs allowed)."""
    paths = sorted({p for part in pattern.split(",") if part for p in storage.match(part.strip())})
    if not paths:
        raise FileNotFoundError(f"no interaction files match {pattern!r}")
    folders = [p for p in paths if not storage.is_remote(p) and os.path.isdir(p)]
    if folders:
        raise ValueError(
            f"--interactions {folders[0]} is a folder; give its files, e.g. '{folders[0].rstrip('/')}/*.csv'"
        )
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return [(index, path, fmt or detect_format(path, read_head(path))) for index, path in enumerate(paths)]
