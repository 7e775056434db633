"""Items: their decoded frames and the records that describe them (``EncodedItem``, ``ItemRow``).

Frames never go through a shuffle. Each decoded item's JPEGs are written straight from the
decoding worker to a small fragment file (a run of tar members) under the job's work folder;
only its path and frame sizes travel on. Once every item's fate is known, the catalogue assigns
dense indices and cuts shards by exact byte size and count; then each item shard is assembled
in parallel by copying fragments in, and the byte offset of every sample is recorded.
"""

from __future__ import annotations

import json
import sys
import time
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from blobstore import ranged_reads
from dataformat.format import is_frame_member, item_frame_member, metadata_member, sanitize_key
from transforms import storage
from transforms.tar_shards import encode_members, read_members

FAILED = "failed"
FRAGMENTS_DIR = "fragments"
"""The folder under the job's work folder that holds each decoded item's fragment, ``{key}.tar``
(a work file, never part of a dataset version)."""


class EncodedItem(NamedTuple):
    """An item that made it into the dataset, and where its frame members are.

    ``fragment`` is a file holding the item's ``{key}.{j}.jpg`` tar members: a fragment this run
    wrote, or (``fragment_offset``/``fragment_size`` set) the item's sample in an earlier version's
    item shard, which lets an incremental run reuse frames without decoding. None in ID-only datasets.
    ``shard_ref`` is then that shard's path seen from the new version's folder
    (``../<version_id>/items/items-NNNNNN.tar``), for a ``reference``-layout run that indexes the
    sample where it is instead of copying it.
    """

    item_id: str
    fragment: str | None = None
    frame_sizes: tuple[int, ...] = ()
    sampler_meta: dict | None = None
    fragment_offset: int = 0
    fragment_size: int | None = None
    fingerprint: str | None = None
    shard_ref: str | None = None


class ItemRow(NamedTuple):
    """An item's catalogue entry: everything items.parquet and the shard writers need."""

    item_id: str
    item_index: int
    title: str | None
    popularity: int
    source: EncodedItem
    shard: str | None
    offset: int | None = None
    size: int | None = None

    @property
    def frame_sizes(self) -> tuple[int, ...]:
        return self.source.frame_sizes


def read_frame_members(item: EncodedItem) -> list[tuple[str, bytes]]:
    """The ``(name, jpeg)`` frame members of an encoded item, from its fragment."""
    if item.fragment_size is None:
        data = storage.read_whole_file(item.fragment)
    else:
        data = ranged_reads.read_range(item.fragment, item.fragment_offset, item.fragment_size)
    return [(name, payload) for name, payload in read_members(data) if is_frame_member(name)]


# --------------------------------------------------------------------------------------------------
# Frames -> fragments
# --------------------------------------------------------------------------------------------------


def frame_member_names(key: str, count: int) -> list[str]:
    return [item_frame_member(key, j) for j in range(count)]


def fragment_path(work_dir: str, item_id: str) -> str:
    return storage.join(work_dir, FRAGMENTS_DIR, f"{sanitize_key(item_id)}.tar")


class WriteFrameFragments(beam.DoFn):
    """(item_id, FrameSample) -> EncodedItem, after writing the frames to ``work_dir/fragments/``.

    Prints a progress line every ``progress_every`` videos a worker has written (0: never).
    """

    def __init__(self, work_dir: str, progress_every: int = 0):
        self.work_dir = work_dir
        self.progress_every = progress_every
        self.items_encoded = Metrics.counter("videorec", "items_encoded")

    def setup(self):
        self.written, self.started = 0, time.monotonic()

    def process(self, sampled):
        item_id, sample = sampled
        names = frame_member_names(sanitize_key(item_id), len(sample.frames))
        path = fragment_path(self.work_dir, item_id)
        storage.write_bytes(path, encode_members(zip(names, sample.frames, strict=True)))
        self.items_encoded.inc()
        self.report_progress()
        yield EncodedItem(item_id, path, tuple(len(f) for f in sample.frames), sample.deterministic_meta())

    def report_progress(self) -> None:
        self.written += 1
        if self.progress_every and self.written % self.progress_every == 0:
            rate = self.written / (time.monotonic() - self.started)
            print(
                f"ingest: a worker has encoded {self.written} videos ({rate:.1f}/s)",
                file=sys.stderr,
                flush=True,
            )


# --------------------------------------------------------------------------------------------------
# Catalogue and item shards
# --------------------------------------------------------------------------------------------------


def item_json(row: ItemRow) -> bytes:
    document = {
        "item_id": row.item_id,
        "item_index": row.item_index,
        "title": row.title,
        "frames": len(row.frame_sizes),
        "sampler": row.source.sampler_meta or {},
    }
    return json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")


def item_sample_members(row: ItemRow) -> list[tuple[str, int]]:
    key = sanitize_key(row.item_id)
    return [(metadata_member(key), len(item_json(row)))] + list(
        zip(frame_member_names(key, len(row.frame_sizes)), row.frame_sizes, strict=True)
    )


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


class DescribeItemsWithoutFrames(beam.PTransform):
    """PCollection[item_id] -> EncodedItem without frames (ID-only datasets)."""

    def expand(self, item_ids):
        encoded = Metrics.counter("videorec", "items_encoded")

        def describe(item_id: str) -> EncodedItem:
            encoded.inc()
            return EncodedItem(item_id)

        return item_ids | "NoFrames" >> beam.Map(describe)
