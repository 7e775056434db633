"""Dense indices and shard cuts without a global list: hash buckets, small prefix sums, ranks in a bucket.

Every user (or item) goes to bucket ``hash(id) % B``. Within a bucket, IDs are sorted by
:func:`id_order_key` and ranked; the bucket's first index is the sum of the sizes of the buckets
before it. The number of buckets ``B`` is computed from the collection's size and bytes only
(:func:`bucket_count`), so indices depend on the data, never on the runner or its worker count.
Shards are cut greedily inside each bucket in index order and numbered the same way, with a
prefix sum over each bucket's shard count. Only ``B`` small ``(bucket, count)`` pairs ever meet on
one worker; a bucket holds about one shard's worth of elements.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence

import apache_beam as beam

# A bucket's expected size is this fraction of a shard's limits, so most buckets fill one shard
# and hash-size noise rarely spills into a second, small one.
BUCKET_FILL = 0.8


def stable_hash(identifier: str) -> int:
    """A 64-bit hash of ``identifier`` that is the same in every process and on every run.

    Not cached: most callers hash each user, failure record or item once per stage, and a cache
    would hold up to its size in long strings per worker; the per-item lookups that ask again
    and again keep their own small memo (``transforms.item_lookup``).
    """
    return int.from_bytes(hashlib.blake2b(identifier.encode("utf-8"), digest_size=8).digest(), "little")


def bucket_of(identifier: str, buckets: int) -> int:
    return stable_hash(identifier) % buckets


def id_order_key(identifier: str) -> tuple[int, int, str]:
    """Integers in numeric order first, then every other ID in code-point order.

    An integer is ASCII digits with at most one leading ``-``; anything else (``--5``, ``-``, ``+3``,
    ``٣``) is a plain string ID.
    """
    text = identifier[1:] if identifier.startswith("-") else identifier
    if text.isdigit() and text.isascii():
        return (0, int(identifier), identifier)
    return (1, 0, identifier)


def bucket_count(elements: int, total_bytes: int, max_samples: int, max_bytes: int) -> int:
    """Buckets for ``elements`` samples of ``total_bytes``: each bucket about ``BUCKET_FILL`` of a shard."""
    by_count = math.ceil(elements / max(1.0, max_samples * BUCKET_FILL))
    by_bytes = math.ceil(total_bytes / max(1.0, max_bytes * BUCKET_FILL))
    return max(1, by_count, by_bytes)


def shard_ranges(starts: Sequence[int], count: int) -> list[tuple[int, int]]:
    """``(start, end)`` positions of each shard from :func:`transforms.tar_shards.cut_shards` starts."""
    ends = list(starts[1:]) + [count]
    return list(zip(starts, ends, strict=True)) if starts else []


def sum_count_and_bytes(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """``(elements, bytes)`` summed over ``(elements, bytes)`` pairs (an associative combine)."""
    count = total = 0
    for n, size in pairs:
        count, total = count + n, total + size
    return count, total


def prefix_by_bucket(counts: Iterable[tuple[int, int]]) -> dict[int, int]:
    """``bucket -> sum of the counts of every lower bucket`` from ``(bucket, count)`` pairs."""
    out, total = {}, 0
    for bucket, count in sorted(counts):
        if bucket in out:
            raise ValueError(f"bucket {bucket} reported twice")
        out[bucket] = total
        total += count
    return out


class PrefixSums(beam.PTransform):
    """PCollection[(bucket, count)] -> singleton PCollection[dict bucket -> first position of that bucket].

    O(buckets) on one worker: the only global step of a bucketed numbering.
    """

    def expand(self, counts):
        return counts | "AllBucketCounts" >> beam.combiners.ToList() | "Prefix" >> beam.Map(prefix_by_bucket)


class RankInBuckets(beam.PTransform):
    """PCollection[(bucket, packed element)] -> (bucket, first dense position of the bucket, sorted elements).

    Elements travel packed (``decode`` turns one back into an element: a runner may hold a whole
    shuffle in memory, and bytes cost far less there than objects). They are decoded and sorted
    within their bucket by ``order_key``; the k-th element of bucket ``b`` has dense position
    ``first + k``. With ``batched``, each value is a tuple of packed elements of that bucket (one
    per upstream batch), so the shuffle moves few values. Memory: one bucket per worker.
    """

    def __init__(self, order_key, decode=None, batched: bool = False):
        super().__init__()
        self.order_key = order_key
        self.decode = decode or (lambda element: element)
        self.batched = batched

    def expand(self, keyed):
        order_key, decode = self.order_key, self.decode
        packed_elements = _flattened if self.batched else iter
        grouped = keyed | "GroupByBucket" >> beam.GroupByKey()
        first = grouped | "BucketSizes" >> beam.MapTuple(
            lambda bucket, values: (bucket, sum(1 for _ in packed_elements(values)))
        )
        return grouped | "Rank" >> beam.Map(
            lambda grouped_bucket, starts: (
                grouped_bucket[0],
                starts[grouped_bucket[0]],
                sorted(map(decode, packed_elements(grouped_bucket[1])), key=order_key),
            ),
            beam.pvalue.AsSingleton(first | "FirstPositions" >> PrefixSums()),
        )


def _flattened(batches):
    return (element for batch in batches for element in batch)


class CountBuckets(beam.PTransform):
    """PCollection[(elements, sample bytes)] (per element or per batch) -> singleton PCollection[bucket
    count] (:func:`bucket_count` of the totals)."""

    def __init__(self, max_samples: int, max_bytes: int):
        super().__init__()
        self.max_samples, self.max_bytes = max_samples, max_bytes

    def expand(self, sizes):
        limits = (self.max_samples, self.max_bytes)
        return (
            sizes
            | "Totals" >> beam.CombineGlobally(sum_count_and_bytes)
            | "Buckets" >> beam.Map(lambda totals: bucket_count(*totals, *limits))
        )


class FirstShardNumbers(beam.PTransform):
    """PCollection[(bucket, ..., bucket-local shard starts)] -> singleton dict bucket -> first shard number.

    Only the first field (the bucket) and the last (its shard starts) are read."""

    def expand(self, cut):
        return cut | "ShardsPerBucket" >> beam.Map(lambda c: (c[0], len(c[-1]))) | "Prefix" >> PrefixSums()


def _identity(record):
    return record


class WriteInParts(beam.PTransform):
    """PCollection[record] -> one summary per part, as ``write_part(part, entries)`` returns it.

    The records are spread over ``ceil(n / per_part)`` parts (``n`` counted first) by a hash of
    ``key_of(entry)``, where ``entry = as_entry(record)`` is what crosses the shuffle; each part's
    entries are handed to ``write_part`` together, so a part's files depend only on its records.
    Memory: one part's entries per worker.
    """

    def __init__(
        self,
        per_part: int,
        key_of: Callable[[object], str],
        write_part: Callable[[int, Iterable], dict],
        as_entry: Callable[[object], object] = _identity,
    ):
        super().__init__()
        self.per_part, self.key_of, self.write_part, self.as_entry = per_part, key_of, write_part, as_entry

    def expand(self, records):
        per_part, key_of, as_entry = self.per_part, self.key_of, self.as_entry
        parts = beam.pvalue.AsSingleton(
            records
            | "CountRecords" >> beam.combiners.Count.Globally()
            | "Parts" >> beam.Map(lambda n: max(1, -(-n // per_part)))
        )

        def keyed_by_part(record, parts: int):
            entry = as_entry(record)
            return bucket_of(key_of(entry), parts), entry

        return (
            records
            | "KeyByPart" >> beam.Map(keyed_by_part, parts)
            | "GroupByPart" >> beam.GroupByKey()
            | "WritePart" >> beam.MapTuple(self.write_part)
        )
