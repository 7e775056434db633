"""What a nightly run knows of the items of the version it builds on, as a PCollection joined by key.

A ``--dataset-root`` version records, per item, what the next run plans with (docs/FORMAT.md):

- the items table: every item that made it, ``ok`` with its video's fingerprint and where its
  sample lies in its item shard (``shard``, ``offset``, ``size``);
- the ``item_failures`` table: every video that was tried and failed (or was given up), with its
  fingerprint, reason and decode attempts so far.

``ReadPreviousItems`` reads both tables part by part on the workers and emits one ``(item_id,
ItemFacts)`` per row, so the next run joins them to its own items by key; no process loads the
whole catalogue, and the failures parts (one record per dropped row) are never read back.
``WriteItemFailures`` writes the ``item_failures`` table of this run.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from dataformat.format import ITEM_FAILURES_SCHEMA, ITEM_FAILURES_TABLE, ITEMS_TABLE
from transforms import storage
from transforms.buckets import WriteInParts
from transforms.failures import FAILURES_PER_PART
from transforms.fingerprint import OK, PreviousItem
from transforms.manifest import read_version_manifest
from transforms.tables import write_table_part

ITEMS_COLUMNS = ["item_id", "fingerprint", "shard", "offset", "size"]
FAILED_COLUMNS = ["item_id", "fingerprint", "reason", "attempts"]


class ItemFacts(NamedTuple):
    """What a version recorded of one item."""

    fingerprint: str | None
    """Its video's fingerprint then (None if the version recorded none)."""
    status: str
    """``ok`` when it made it into the dataset, else the failure reason."""
    attempts: int
    """Decode attempts made so far for this fingerprint (1 for an ``ok`` item)."""
    frames: tuple[str, int, int] | None = None
    """``(item shard URL, offset, size)`` of its sample, for an ``ok`` item with frames."""

    @property
    def plan_input(self) -> PreviousItem:
        """The facts ``transforms.fingerprint.plan_decodes`` plans with."""
        return PreviousItem(self.fingerprint, self.status, self.attempts)


def ok_facts(version: str, row: dict) -> tuple[str, ItemFacts]:
    """``(item_id, ItemFacts)`` of one items-table row of the version at ``version``."""
    frames = (storage.join(version, row["shard"]), row["offset"], row["size"]) if row["shard"] else None
    return row["item_id"], ItemFacts(row["fingerprint"], OK, 1, frames)


def failed_facts(row: dict) -> tuple[str, ItemFacts]:
    """``(item_id, ItemFacts)`` of one ``item_failures`` row."""
    return row["item_id"], ItemFacts(row["fingerprint"], row["reason"], row["attempts"])


def table_part_urls(version: str) -> Iterable[tuple[str, str]]:
    """``(table, part URL)`` of every part of the items and ``item_failures`` tables of ``version``
    (a version-2 manifest lists no ``item_failures``: its failed videos count as never tried)."""
    tables = read_version_manifest(version)["tables"]
    for table in (ITEMS_TABLE, ITEM_FAILURES_TABLE):
        for path in tables.get(table, []):
            yield table, storage.join(version, path)


def read_part_facts(part: tuple[str, str], version: str) -> Iterable[tuple[str, ItemFacts]]:
    """The facts in one table part, read a row group at a time (a part holds one item bucket, or
    at most ``FAILURES_PER_PART`` failed videos)."""
    table, url = part
    columns, facts = (
        (ITEMS_COLUMNS, lambda row: ok_facts(version, row))
        if table == ITEMS_TABLE
        else (FAILED_COLUMNS, failed_facts)
    )
    parquet = pq.ParquetFile(io.BytesIO(storage.read_whole_file(url)))
    for batch in parquet.iter_batches(columns=columns):
        for row in batch.to_pylist():
            yield facts(row)


def previous_facts(facts: Iterable[ItemFacts]) -> ItemFacts | None:
    """The one fact that counts of what a version recorded for an item: ``ok`` over a failure."""
    ranked = sorted(facts, key=lambda fact: fact.status != OK)
    return ranked[0] if ranked else None


class ReadPreviousItems(beam.PTransform):
    """PBegin -> PCollection[(item_id, ItemFacts)]: every item the version ``version`` recorded (none
    when ``version`` is None: a root's first run).

    The manifest is read on a worker; its table parts are spread over the workers, each read one
    part at a time. Memory: one table part per worker.
    """

    def __init__(self, version: str | None):
        super().__init__()
        self.version = version

    def expand(self, pbegin):
        version = self.version
        if version is None:
            return pbegin | "NoBaseVersion" >> beam.Create([])
        return (
            pbegin
            | "BaseVersion" >> beam.Create([version])
            | "ItsItemTableParts" >> beam.FlatMap(table_part_urls)
            | "SpreadParts" >> beam.Reshuffle()
            | "ReadEachPart" >> beam.FlatMap(read_part_facts, version)
        )


def item_failures_table(records: Iterable[dict]) -> pa.Table:
    """The ``item_failures`` rows of video failure records (those carrying a ``fingerprint``), by item ID."""
    ordered = sorted(records, key=lambda record: record["item_id"])
    return pa.table(
        {
            "item_id": [r["item_id"] for r in ordered],
            "fingerprint": [r["fingerprint"] for r in ordered],
            "reason": [r["reason"] for r in ordered],
            "attempts": [int(r.get("attempts", 1)) for r in ordered],
        },
        schema=ITEM_FAILURES_SCHEMA,
    )


class WriteItemFailures(beam.PTransform):
    """PCollection[item failure dict] -> one table-part summary per ``item_failures`` part written.

    Only records with a ``fingerprint`` (a video that was tried: decoded and failed, or given up)
    become rows. Rows go to ``ceil(n / FAILURES_PER_PART)`` parts by a hash of the item ID, sorted
    by item ID in each part. Memory: one part (at most ``FAILURES_PER_PART`` rows) per worker.
    """

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, item_failures):
        output_dir = self.output_dir
        return (
            item_failures
            | "TriedVideos" >> beam.Filter(lambda record: bool(record.get("fingerprint")))
            | "WriteParts"
            >> WriteInParts(
                FAILURES_PER_PART,
                key_of=lambda record: record["item_id"],
                write_part=lambda bucket, records: write_table_part(
                    output_dir, ITEM_FAILURES_TABLE, bucket, item_failures_table(records)
                ),
            )
        )
