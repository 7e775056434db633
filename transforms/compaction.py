"""Compaction of a dataset root: stop pointing into earlier versions that are mostly dead.

A nightly run of the ``reference`` layout indexes an unchanged item's sample where an earlier version
wrote it (``../<version_id>/items/items-NNNNNN.tar``), and ``prune`` keeps every version a kept one
points into. A version is kept whole: its item shards, and its train shards and tables too, which no
later version reads. What the new version uses of it is the samples of its items that are still
unchanged and still needed. Left alone, each night's version would be kept for as long as any item
it decoded is unchanged, and every night would add its train shards and tables to the root for good.

So each run counts, per earlier version, the bytes of the samples it would index there, and compares
them with all the files that version wrote: below ``--compact-below`` (a fraction), the run copies
those samples into its own item shards instead (the bytes are read by offset, never decoded again)
and no longer points into that version, which the next prune may delete. Every version a root keeps
only by reference is then at least that fraction in use: the root costs at most ``1 / compact_below``
times the frames in use, plus the versions ``--keep`` holds anyway. The price is the copying: the
samples of young versions are copied forward until a version holds more frames than train shards
and tables (docs/INCREMENTAL.md has the figures).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from dataformat.format import EARLIER_VERSION_PREFIX, is_earlier_version_path
from dataformat.manifest import earlier_versions, listed_files
from transforms.item_shards import EncodedItem
from transforms.manifest import read_version_manifest
from transforms.reconcile import ReconciliationError

DEFAULT_COMPACT_BELOW = 0.5
"""Default ``--compact-below``: an earlier version is copied from once less than half of its bytes are
samples the new version still indexes (a root then costs at most 2x the frames in use, past ``--keep``)."""

ITEMS_COMPACTED = "items_compacted"
"""The counter of reused samples copied out of sparse earlier versions."""


def version_of_ref(shard_ref: str) -> str:
    """The version id of ``../<version_id>/items/items-NNNNNN.tar``."""
    if not is_earlier_version_path(shard_ref):
        raise ValueError(f"not a path into an earlier version: {shard_ref!r}")
    return shard_ref[len(EARLIER_VERSION_PREFIX) :].split("/", 1)[0]


def own_bytes(manifest: dict) -> int:
    """Bytes of the files a version wrote itself: its listed item and train shards, tables and failure
    parts, less the item shards it points to in earlier versions. What keeping that version costs."""
    return sum(
        int(f.entry.get("bytes") or 0) for f in listed_files(manifest) if not is_earlier_version_path(f.path)
    )


def earlier_version_bytes(base_version: str) -> dict[str, int]:
    """``{version_id: bytes of the files it wrote}`` for the base version (the previous ``LATEST``) and every
    earlier version it points into: the versions a nightly run can index samples in. One manifest read
    per version, at graph construction."""
    base_version = base_version.rstrip("/")
    parent, _, base_id = base_version.rpartition("/")
    manifest = read_version_manifest(base_version)
    sizes = {base_id: own_bytes(manifest)}
    for version_id in sorted(earlier_versions(manifest)):
        sizes[version_id] = own_bytes(read_version_manifest(f"{parent}/{version_id}"))
    return sizes


def reused_bytes(item: EncodedItem) -> list[tuple[str, int]]:
    """``[(version_id, sample bytes)]`` of an item indexed in an earlier version, else ``[]``."""
    if not item.shard_ref:
        return []
    return [(version_of_ref(item.shard_ref), int(item.fragment_size or 0))]


def sparse_versions(live: dict[str, int], version_bytes: dict[str, int], below: float) -> frozenset[str]:
    """The versions whose samples still indexed (``live`` bytes) are less than ``below`` of the files
    they wrote (``version_bytes``).

    Raises:
        ReconciliationError: a sample points into a version the base version does not lead to.
    """
    unknown = sorted(set(live) - set(version_bytes))
    if unknown:
        raise ReconciliationError(
            f"reused samples point into versions the base version does not reference: {unknown[:5]}"
        )
    return frozenset(v for v, n in live.items() if n < below * version_bytes[v])


class _CopyIfSparse(beam.DoFn):
    """EncodedItem -> the same item, without its ``shard_ref`` when that points into a sparse version."""

    def __init__(self):
        self.compacted = Metrics.counter("videorec", ITEMS_COMPACTED)

    def process(self, item: EncodedItem, sparse: frozenset[str]):
        if item.shard_ref and version_of_ref(item.shard_ref) in sparse:
            self.compacted.inc()
            yield item._replace(shard_ref=None)  # its bytes are copied from the earlier shard by offset
        else:
            yield item


class CopyFromSparseVersions(beam.PTransform):
    """PCollection[EncodedItem] -> PCollection[EncodedItem]: items indexed in an earlier version whose
    still-indexed bytes are less than ``below`` of the files it wrote lose their ``shard_ref``, so the
    item catalogue copies them into this version's shards.

    ``version_bytes`` is :func:`earlier_version_bytes` of the base version (one entry per version, not
    per item). Only ``(version_id, bytes)`` pairs are combined, then one small set of version ids is a
    side input. ``below`` 0 never copies.
    """

    def __init__(self, version_bytes: dict[str, int], below: float):
        super().__init__()
        self.version_bytes, self.below = dict(version_bytes), below

    def expand(self, encoded):
        sparse = (
            encoded
            | "ReusedBytes" >> beam.FlatMap(reused_bytes)
            | "LiveBytesPerVersion" >> beam.CombinePerKey(sum)
            | "AsOneDict" >> beam.combiners.ToDict()
            | "SparseVersions" >> beam.Map(sparse_versions, self.version_bytes, self.below)
        )
        return encoded | "CopyIfSparse" >> beam.ParDo(_CopyIfSparse(), beam.pvalue.AsSingleton(sparse))
