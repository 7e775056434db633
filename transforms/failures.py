"""Failure records: every dropped row, item or user, with the stage that dropped it and why.

A record is a plain JSON-ready dict::

    {"kind": "row" | "item" | "user", "stage": "...", "reason": "...", "message": "...", ...ids}

Rows also carry ``file`` and ``row`` (1-based line number, or the Parquet row index + 1) and,
where it helps, the raw ``text``; items carry ``item_id`` (and ``uri`` for videos); users carry
``user_id``. ``WriteFailures`` sorts the records so the file is identical on every run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from dataformat.format import FAILURE_PART_PATTERN
from transforms import storage
from transforms.buckets import WriteInParts

KINDS = ("row", "item", "user")
FAILURES_PER_PART = 20_000
MAX_TEXT_CHARS = 500


def failure(kind: str, stage: str, reason: str, message: str, **ids) -> dict:
    """One failure record (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"failure kind must be one of {KINDS}, got {kind!r}")
    record = {"kind": kind, "stage": stage, "reason": reason, "message": message}
    record.update(ids)
    if isinstance(record.get("text"), str):
        record["text"] = record["text"][:MAX_TEXT_CHARS]
    return record


def counter_name(kind: str, reason: str) -> str:
    """Beam counter name for dropped ``kind`` records with ``reason`` (``rows_dropped.duplicate``...)."""
    return f"{kind}s_dropped.{reason}" if kind != "item" else f"items_failed.{reason}"


def sort_key(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def as_line(record: dict) -> tuple[str, str, str]:
    """``(kind, reason, JSON line)`` of a record: what a failures part needs of it, in compact form.

    The part's writer holds every entry of its part at once; as strings they take about a quarter
    of the memory the dicts do (about 350 bytes a record instead of 1.3 KB).
    """
    return record["kind"], record["reason"], sort_key(record)


def encode_part(entries: Iterable[tuple[str, str, str]]) -> tuple[bytes, dict[str, dict[str, int]], int]:
    """``(JSON lines sorted, UTF-8; {kind: {reason: n}} with keys sorted; record count)`` of a part.

    The lines are sorted so the file does not depend on processing order.
    """
    counts: dict[str, Counter] = {kind: Counter() for kind in KINDS}
    lines = []
    for kind, reason, line in entries:
        counts[kind][reason] += 1
        lines.append(line)
    lines.sort()
    by_kind = {kind: dict(sorted(counter.items())) for kind, counter in counts.items()}
    return "".join(line + "\n" for line in lines).encode("utf-8"), by_kind, len(lines)


class _CountFailure(beam.DoFn):
    def process(self, record: dict):
        Metrics.counter("videorec", counter_name(record["kind"], record["reason"])).inc()
        yield record


class CountFailures(beam.PTransform):
    """PCollection[failure dict] -> the same records, each counted in a Beam counter by kind and reason."""

    def expand(self, failures):
        return failures | "CountEachFailure" >> beam.ParDo(_CountFailure())


def failure_counts(parts: Iterable[dict]) -> dict[str, dict[str, int]]:
    """``{kind: {reason: n}}`` summed over the summaries of every failures part."""
    totals: dict[str, Counter] = {kind: Counter() for kind in KINDS}
    for part in parts:
        for kind, reasons in part["counts"].items():
            totals[kind].update(reasons)
    return {kind: dict(sorted(counter.items())) for kind, counter in totals.items()}


def write_failure_part(output_dir: str, bucket: int, entries: Iterable[tuple[str, str, str]]) -> dict:
    """Write one failures part from ``as_line`` entries; return ``{"path", "records", "bytes", "sha256",
    "counts"}``.

    ``counts`` is ``{kind: {reason: n}}`` of the part's records, so the manifest can add parts up.
    """
    data, counts, records = encode_part(entries)
    path = FAILURE_PART_PATTERN.format(bucket)
    sha = storage.write_bytes(storage.join(output_dir, path), data)
    return {"path": path, "records": records, "bytes": len(data), "sha256": sha, "counts": counts}


class WriteFailures(beam.PTransform):
    """PCollection[failure dict] -> one summary dict per failures part written (see ``write_failure_part``).

    Records are spread over ``ceil(n / FAILURES_PER_PART)`` parts by a hash of their content and
    sorted inside each part, so the files depend only on the records. They cross the shuffle as
    ``as_line`` entries. Memory: one part's lines per worker (at most ``FAILURES_PER_PART``, about
    7 MB of lines).
    """

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, failures):
        output_dir = self.output_dir
        return failures | WriteInParts(
            FAILURES_PER_PART,
            key_of=lambda entry: entry[2],
            write_part=lambda bucket, entries: write_failure_part(output_dir, bucket, entries),
            as_entry=as_line,
        )


def read_failures(dataset_dir: str, manifest: dict) -> list[dict]:
    """Every failure record of a dataset version, part by part in the manifest's order."""
    records = []
    for path in manifest["failures"]:
        text = storage.read_whole_file(storage.join(dataset_dir, path)).decode("utf-8")
        records += [json.loads(line) for line in text.splitlines() if line]
    return records
