"""Interaction logs -> packed rows, in parallel byte splits with exact line numbers (Beam).

The parsing itself is plain functions in :mod:`transforms.interactions`; the packing in
:mod:`transforms.packed_rows`.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import storage
from transforms.input_splits import PARQUET_SPLIT_ROWS, SPLIT_BYTES, InputSplit, plan_splits, text_bytes
from transforms.interactions import parse_parquet, parse_text
from transforms.packed_rows import Interaction, history_bucket_count, pack_row, pack_user_rows
from transforms.text_splits import count_newlines, split_context, split_lines

FAILED = "failed"
VALID = "valid"


class ParseSplit(beam.DoFn):
    """InputSplit -> ``(user bucket, blob of users' packed rows)`` (main, see :func:`pack_user_rows`),
    failure dicts (``failed``) and the split's number of valid rows (``valid``, one int per split).

    Rows are grouped by user, and users by bucket, within the split before they leave the worker,
    so the shuffle holds one value per split and bucket instead of one per row or per user (a
    split's rows fit in memory by design). Side input: ``(file_index, split) -> (newlines before
    the split, CSV quote state at its start)`` (``transforms.text_splits.split_context``), to number
    lines exactly and to read CSV records whose quoted fields hold newlines whole.
    """

    def __init__(self, buckets: int):
        self.buckets = buckets
        self.rows_read = Metrics.counter("videorec", "rows_read")

    def process(self, split: InputSplit, context: dict):
        by_user: dict[str, list[bytes]] = {}
        with storage.open_read(split.path) as reader:
            if split.format == "parquet":
                parsed = parse_parquet(
                    reader, split.file_index, split.path, split.timestamp_format, (split.start, split.end)
                )
            else:
                newlines_before, quote_state = context[(split.file_index, split.number)]
                skipped, lines, limit = split_lines(reader, split.start, split.end, quote_state)
                first = 1 + newlines_before + skipped
                parsed = parse_text(
                    lines,
                    split.format,
                    split.file_index,
                    split.path,
                    first,
                    split.columns,
                    split.timestamp_format,
                    limit,
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


def spread_splits(pbegin, splits: list[InputSplit]):
    """``(splits, context)``: the planned splits as a PCollection spread over the workers, and the
    singleton side input that tells each text split the lines before it (``split_context``). Applied
    in the caller's ``expand``, so its steps keep the caller's labels."""
    spread = pbegin | "ListSplits" >> beam.Create(splits) | "SpreadSplits" >> beam.Reshuffle()
    context = (
        spread
        | "CountNewlines" >> beam.Map(count_newlines)
        | "AllSplitCounts" >> beam.combiners.ToList()
        | "LinesBeforeEachSplit" >> beam.Map(split_context)
    )
    return spread, beam.pvalue.AsSingleton(context)


class ReadInteractions(beam.PTransform):
    """PBegin -> tagged outputs: main = ``(user bucket, blob)`` (see :func:`pack_user_rows`), ``failed`` =
    failure dicts, ``valid`` = valid rows per split. ``user_buckets`` is the bucket count used.

    ``sources`` comes from :func:`resolve_inputs`, run at launch so a typo fails before any work.
    Text files are read in byte splits on all workers; a first pass counts each split's newlines
    (and a CSV's quote-state transitions) so that every row keeps its exact line number and a
    record spanning lines is read once, whole. ``timestamp_format``: ``--timestamp-format``.
    """

    def __init__(
        self,
        sources: list[tuple[int, str, str]],
        split_bytes: int = SPLIT_BYTES,
        timestamp_format: str = "unix",
        split_rows: int = PARQUET_SPLIT_ROWS,
    ):
        super().__init__()
        self.splits = plan_splits(sources, split_bytes, timestamp_format, split_rows)
        self.user_buckets = history_bucket_count(text_bytes(self.splits))

    def expand(self, pbegin):
        splits, context = spread_splits(pbegin, self.splits)
        return splits | "ParseRows" >> beam.ParDo(ParseSplit(self.user_buckets), context).with_outputs(
            FAILED, VALID, main="rows"
        )
