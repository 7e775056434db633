"""Interaction logs -> packed rows, in parallel byte splits with exact line numbers (Beam).

The parsing itself is plain functions in :mod:`transforms.interactions`; the packing in
:mod:`transforms.packed_rows`.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import storage
from transforms.interactions import (
    SPLIT_BYTES,
    InputSplit,
    count_newlines,
    first_line_numbers,
    parse_parquet,
    parse_text,
    plan_splits,
    split_lines,
)
from transforms.packed_rows import Interaction, history_bucket_count, pack_row, pack_user_rows

FAILED = "failed"
VALID = "valid"


class ParseSplit(beam.DoFn):
    """InputSplit -> ``(user bucket, blob of users' packed rows)`` (main, see :func:`pack_user_rows`),
    failure dicts (``failed``) and the split's number of valid rows (``valid``, one int per split).

    Rows are grouped by user, and users by bucket, within the split before they leave the worker,
    so the shuffle holds one value per split and bucket instead of one per row or per user (a
    split's rows fit in memory by design). Side input: ``(file_index, split) -> newlines before
    the split``, to number lines exactly.
    """

    def __init__(self, buckets: int):
        self.buckets = buckets
        self.rows_read = Metrics.counter("videorec", "rows_read")

    def process(self, split: InputSplit, newlines_before: dict):
        by_user: dict[str, list[bytes]] = {}
        with storage.open_read(split.path) as reader:
            if split.format == "parquet":
                parsed = parse_parquet(reader, split.file_index, split.path, split.timestamp_format)
            else:
                skipped, lines = split_lines(reader, split.start, split.end)
                first = 1 + newlines_before[(split.file_index, split.number)] + skipped
                parsed = parse_text(
                    lines,
                    split.format,
                    split.file_index,
                    split.path,
                    first,
                    split.columns,
                    split.timestamp_format,
                )
            rows_read = 0
            for result in parsed:
                rows_read += 1
                if isinstance(result, Interaction):
                    by_user.setdefault(result.user_id, []).append(pack_row(result))
                else:
                    yield beam.pvalue.TaggedOutput(FAILED, result)
            self.rows_read.inc(rows_read)  # once per split: a counter update costs about 1 us
        yield beam.pvalue.TaggedOutput(VALID, sum(len(rows) for rows in by_user.values()))
        yield from pack_user_rows(by_user, self.buckets).items()


class ReadInteractions(beam.PTransform):
    """PBegin -> tagged outputs: main = ``(user bucket, blob)`` (see :func:`pack_user_rows`), ``failed`` =
    failure dicts, ``valid`` = valid rows per split. ``user_buckets`` is the bucket count used.

    ``sources`` comes from :func:`resolve_inputs`, run at launch so a typo fails before any work.
    Text files are read in byte splits on all workers; a first pass counts each split's newlines
    so that every row keeps its exact line number. ``timestamp_format``: ``--timestamp-format``.
    """

    def __init__(
        self,
        sources: list[tuple[int, str, str]],
        split_bytes: int = SPLIT_BYTES,
        timestamp_format: str = "unix",
    ):
        super().__init__()
        self.splits = plan_splits(sources, split_bytes, timestamp_format)
        self.user_buckets = history_bucket_count(sources)

    def expand(self, pbegin):
        splits = pbegin | "ListSplits" >> beam.Create(self.splits) | "SpreadSplits" >> beam.Reshuffle()
        newlines_before = (
            splits
            | "CountNewlines" >> beam.Map(count_newlines)
            | "AllSplitCounts" >> beam.combiners.ToList()
            | "LinesBeforeEachSplit" >> beam.Map(first_line_numbers)
        )
        return splits | "ParseRows" >> beam.ParDo(
            ParseSplit(self.user_buckets), beam.pvalue.AsSingleton(newlines_before)
        ).with_outputs(FAILED, VALID, main="rows")
