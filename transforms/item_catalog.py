"""The item catalogue: dense item indices, item shards and the items table, bucket by bucket.

Encoded items are joined by key with their popularity and title, hashed into buckets
(:mod:`transforms.buckets`), ranked, cut into item shards inside each bucket and written there:
each bucket writes its item shards (copying frame fragments in) and its part of the items table.
What every later step needs per item travels on as one compact :class:`ItemLookup`.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from dataformat.format import (
    ITEM_SHARD_PATTERN,
    ITEMS_TABLE,
    is_earlier_version_path,
    item_shard_number,
    metadata_member,
    sanitize_key,
)
from transforms.buckets import (
    CountBuckets,
    FirstShardNumbers,
    RankInBuckets,
    bucket_of,
    id_order_key,
    shard_ranges,
)
from transforms.item_lookup import ItemLookup, placed_items_array
from transforms.item_shards import (
    ItemRow,
    item_json,
    item_sample_members,
    read_frame_members,
)
from transforms.keyed_csv import REJECTED, TITLES
from transforms.reconcile import PLANNED_SHARDS, REFERENCED_SHARDS
from transforms.tables import items_table, write_table_part
from transforms.tar_shards import TarShardWriter, cut_shards, sample_size


def join_item_facts(joined: tuple[str, dict]):
    """``(item_id, {"encoded", "popularity", "title"})`` -> ItemRow without index or shard (encoded items only)."""
    item_id, sides = joined
    if not sides["encoded"]:
        return
    titles = sorted(sides["title"])
    if len(titles) > 1:
        Metrics.counter("videorec", f"{TITLES.name}{REJECTED}duplicate_item").inc(len(titles) - 1)
    yield ItemRow(
        item_id, 0, titles[0] if titles else None, int(sum(sides["popularity"])), sides["encoded"][0], None
    )


def written_here(row: ItemRow, index_in_place: bool) -> bool:
    """Whether the row's sample goes into one of this version's item shards: it has frames, and
    (``index_in_place``) is not a reused sample indexed where an earlier version wrote it."""
    return row.source.fragment is not None and not (index_in_place and row.source.shard_ref)


def cut_item_bucket(
    bucket: int, first: int, rows: list[ItemRow], max_samples: int, max_bytes: int, index_in_place: bool
) -> tuple[int, list[ItemRow], list[int]]:
    """``(bucket, rows with 1-based dense indices, bucket-local shard starts)``; rows without frames,
    and reused ones indexed in place, get no shard of this version."""
    indexed = [row._replace(item_index=first + rank + 1) for rank, row in enumerate(rows)]
    framed = [row for row in indexed if written_here(row, index_in_place)]
    if not framed:
        return bucket, indexed, []
    return (
        bucket,
        indexed,
        cut_shards([sample_size(item_sample_members(r)) for r in framed], max_samples, max_bytes),
    )


class ItemCatalog(beam.PTransform):
    """(encoded, popularity, titles) -> ``ItemsWritten``: item shards and the items table, written.

    Inputs: PCollection[EncodedItem], PCollection[(item_id, training interactions)], and
    PCollection[(item_id, title)]. Outputs (a dict of PCollections): ``lookup`` (singleton
    ``ItemLookup``), ``shards`` (item ShardInfo dicts) and ``tables`` (items table part infos).

    ``index_in_place`` (nightly runs of the ``reference`` layout): a reused item's row points at its
    sample in the earlier version's shard (``EncodedItem.shard_ref``) instead of a copy, so only new
    and changed items are written; each items part summary names the earlier shards it points into.
    """

    def __init__(self, dataset_dir: str, max_samples: int, max_bytes: int, index_in_place: bool = False):
        super().__init__()
        self.dataset_dir, self.max_samples, self.max_bytes = dataset_dir, max_samples, max_bytes
        self.index_in_place = index_in_place

    def expand(self, inputs):
        encoded, popularity, titles = inputs
        rows = (
            {
                "encoded": encoded | "KeyEncoded" >> beam.Map(lambda item: (item.item_id, item)),
                "popularity": popularity,
                "title": titles,
            }
            | "JoinItemFacts" >> beam.CoGroupByKey()
            | "ItemRows" >> beam.FlatMap(join_item_facts)
        )
        buckets = beam.pvalue.AsSingleton(
            rows
            | "ItemSizes" >> beam.Map(lambda row: (1, sample_size(item_sample_members(row))))
            | "ItemBuckets" >> CountBuckets(self.max_samples, self.max_bytes)
        )
        cut = (
            rows
            | "KeyByBucket" >> beam.Map(lambda row, b: (bucket_of(row.item_id, b), row), buckets)
            | "RankItems" >> RankInBuckets(lambda row: id_order_key(row.item_id))
            | "CutItemShards"
            >> beam.Map(
                lambda ranked, *limits: cut_item_bucket(*ranked, *limits),
                self.max_samples,
                self.max_bytes,
                self.index_in_place,
            )
        )
        first_shard = beam.pvalue.AsSingleton(cut | "FirstShards" >> FirstShardNumbers())
        written = cut | "WriteItemBucket" >> beam.ParDo(
            _WriteItemBucket(self.dataset_dir, self.index_in_place), first_shard
        ).with_outputs("shards", "tables", main="placed")
        lookup = written.placed | "ItemLookup" >> beam.CombineGlobally(_CollectLookup())
        return {"lookup": lookup, "shards": written.shards, "tables": written.tables}


class _CollectLookup(beam.CombineFn):
    """Record arrays of placed items (one per bucket) -> one ItemLookup."""

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, part):
        accumulator.append(part)
        return accumulator

    def merge_accumulators(self, accumulators):
        return [part for accumulator in accumulators for part in accumulator]

    def extract_output(self, accumulator) -> ItemLookup:
        return ItemLookup.from_parts(accumulator)


class _WriteItemBucket(beam.DoFn):
    """(bucket, indexed rows, shard starts) -> record array of placed items; ``shards``/``tables`` infos."""

    def __init__(self, dataset_dir: str, index_in_place: bool):
        self.dataset_dir = dataset_dir
        self.index_in_place = index_in_place
        self.shards_written = Metrics.counter("videorec", "item_shards")

    def process(self, cut: tuple[int, list[ItemRow], list[int]], first_shard: dict[int, int]):
        bucket, rows, starts = cut
        framed = [row for row in rows if written_here(row, self.index_in_place)]
        placed, planned = {}, {}  # planned: shard path -> samples the cut put in it, for reconciliation
        for row in rows:
            if row.source.fragment is not None and not written_here(row, self.index_in_place):
                source = row.source
                placed[row.item_id] = row._replace(
                    shard=source.shard_ref, offset=source.fragment_offset, size=source.fragment_size
                )
        for number, (start, end) in enumerate(shard_ranges(starts, len(framed))):
            shard_path = ITEM_SHARD_PATTERN.format(first_shard[bucket] + number)
            planned[shard_path] = end - start
            with TarShardWriter(self.dataset_dir, shard_path) as shard:
                for row in framed[start:end]:
                    offset = shard.offset()
                    shard.add(metadata_member(sanitize_key(row.item_id)), item_json(row))
                    for name, data in read_frame_members(row.source):
                        shard.add(name, data)
                    shard.end_sample()
                    placed[row.item_id] = row._replace(
                        shard=shard_path, offset=offset, size=shard.offset() - offset
                    )
            self.shards_written.inc()
            yield beam.pvalue.TaggedOutput("shards", shard.info.to_dict())
        rows = [placed.get(row.item_id, row) for row in rows]
        part = write_table_part(self.dataset_dir, ITEMS_TABLE, bucket, items_table(rows))
        referenced = sorted({row.shard for row in placed.values() if is_earlier_version_path(row.shard)})
        yield beam.pvalue.TaggedOutput(
            "tables", {**part, PLANNED_SHARDS: planned, REFERENCED_SHARDS: referenced}
        )
        yield placed_items_array(
            (r.item_id, r.item_index, _shard_number(r.shard), r.offset, r.size, r.frame_sizes) for r in rows
        )


def _shard_number(shard: str | None) -> int | None:
    """This version's item shard number, None for no shard or an earlier version's (indexed in place:
    the ``reference`` layout never reads frames back for train shards)."""
    return None if shard is None or is_earlier_version_path(shard) else item_shard_number(shard)
