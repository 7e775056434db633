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

from transforms import storage

KINDS = ("row", "item", "user")
FAILURES_FILE = "failures/failures-00000-of-00001.jsonl"
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


def count_by_reason(records: Iterable[dict], kind: str) -> dict[str, int]:
    """``{reason: n}`` for the records of one kind, keys sorted."""
    counts = Counter(r["reason"] for r in records if r["kind"] == kind)
    return dict(sorted(counts.items()))


def sort_key(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def encode_jsonl(records: Iterable[dict]) -> bytes:
    """Records as sorted JSON lines (UTF-8), so the file does not depend on processing order."""
    lines = sorted(sort_key(r) for r in records)
    return "".join(line + "\n" for line in lines).encode("utf-8")


class _CountFailure(beam.DoFn):
    def process(self, record: dict):
        Metrics.counter("videorec", counter_name(record["kind"], record["reason"])).inc()
        yield record


class CountFailures(beam.PTransform):
    """PCollection[failure dict] -> the same records, each counted in a Beam counter by kind and reason."""

    def expand(self, failures):
        return failures | "CountEachFailure" >> beam.ParDo(_CountFailure())


def write_failures(output_dir: str, records: list[dict]) -> dict:
    """Write the failures file under ``output_dir``; return ``{"path", "records", "bytes", "sha256"}``."""
    data = encode_jsonl(records)
    sha = storage.write_bytes(storage.join(output_dir, FAILURES_FILE), data)
    return {"path": FAILURES_FILE, "records": len(records), "bytes": len(data), "sha256": sha}
