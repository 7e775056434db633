"""The ingest job's graph: interaction logs + raw videos -> one dataset version (docs/FORMAT.md).

Each stage is a composite transform from :mod:`transforms`; :func:`build_pipeline` wires them.
Only IDs and small records move through shuffles: frames go from the decoder to fragment files,
into item shards, and from item shards into train shards. Nothing about users or interactions is
gathered on one worker (docs/INGEST.md lists each step's memory bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from dataformat.format import TRAIN_FRAMES_REFERENCE
from pipeline import versions
from pipeline.flags import INGEST_DECODE_THREADS
from pipeline.last_steps import ManifestInputs, PublishAsLatest, WriteManifestLast
from pipeline.options import IngestConfig
from pipeline.ownership import work_root
from transforms.bundle_counts import CountKeys
from transforms.compaction import CopyFromSparseVersions, earlier_version_bytes
from transforms.encode_items import EncodeItems
from transforms.failures import CountFailures, WriteFailures
from transforms.item_catalog import ItemCatalog
from transforms.item_facts import WriteItemFailures
from transforms.item_filter import CountItemInteractions, DroppedItemRecords, NeededItems, rare_items
from transforms.item_lookup import excluded_items_of
from transforms.item_shards import DescribeItemsWithoutFrames
from transforms.keyed_csv import TITLES, ReadKeyedCsv
from transforms.new_items import ChooseNewItems
from transforms.read_interactions import FAILED, VALID, ReadInteractions
from transforms.reuse import ReuseFrom
from transforms.sequences import (
    BuildUserSequences,
    GroupIntoHistories,
    batch_sequences,
    effective_min_length,
)
from transforms.train_shards import WriteUserShards


def ingest_sampler(config: IngestConfig):
    """``(SamplerConfig, manifest "sampler" section)``, or ``(None, None)`` for ID-only datasets."""
    if not config.has_videos:
        return None, None
    from transforms.decode.types import SAMPLER_VERSION, SamplerConfig

    sampler = SamplerConfig(**{"threads": INGEST_DECODE_THREADS, **config.sampler})
    section = {
        "version": SAMPLER_VERSION,
        "config_hash": sampler.config_hash(),
        "num_frames": sampler.num_frames,
        "size": list(sampler.size),
        "config": {
            k: v for k, v in sampler.to_dict().items() if k not in ("threads", "timeout_s", "max_memory_mb")
        },
    }
    return sampler, section


@dataclass
class ItemOutcomes:
    """What happened to the items: ``EncodedItem``s, failure dicts, ``(item_id, reason)`` of removed
    items, and ``(item_id, interactions)`` of every item seen."""

    encoded: beam.PCollection
    failures: beam.PCollection
    excluded: beam.PCollection
    seen: beam.PCollection


@dataclass
class WrittenFiles:
    """PCollections of summaries of the files written, for the manifest."""

    item_shards: beam.PCollection
    train_shards: beam.PCollection
    table_parts: beam.PCollection


def choose_and_encode_items(
    histories, config: IngestConfig, progress_every: int, reuse: ReuseFrom | None, new_items=None
) -> ItemOutcomes:
    """Drop rare items, decide which items are needed, and decode (or describe) those.

    ``new_items`` (singleton PCollection of the new-item set, or None) changes which users are
    long enough, as it does when the sequences are built.
    """
    pipeline = histories.pipeline
    sampler_config, _ = ingest_sampler(config)
    item_counts = histories | "CountItemInteractions" >> CountItemInteractions()
    rare = item_counts | "RareItems" >> beam.FlatMap(rare_items, config.min_item_interactions)
    needed = histories | "NeededItems" >> NeededItems(
        rare, effective_min_length(config.min_user_interactions), new_items
    )
    undecoded = (item_counts, needed) | "DroppedItems" >> DroppedItemRecords(config.min_item_interactions)
    if config.has_videos:
        encode = EncodeItems(
            config.videos,
            config.video_pattern,
            config.video_map,
            sampler_config,
            work_root(config),
            progress_every,
            reuse,
            allow_any_uri=config.allow_any_uri,
            max_attempts=config.max_attempts,
        )
        encoded, video_failures = needed | "EncodeItems" >> encode
    else:
        encoded = needed | "DescribeItems" >> DescribeItemsWithoutFrames()
        video_failures = pipeline | "NoVideoFailures" >> beam.Create([])
    excluded = (
        rare,
        video_failures | "FailedItemReasons" >> beam.Map(lambda f: (f["item_id"], f["reason"])),
    ) | "ExcludedItems" >> beam.Flatten()
    failures = (undecoded, video_failures) | "ItemFailures" >> beam.Flatten()
    return ItemOutcomes(encoded, failures, excluded, item_counts)


def write_dataset_files(
    encoded, sequences, excluded, config: IngestConfig, compaction: CopyFromSparseVersions | None = None
) -> WrittenFiles:
    """Item shards, train shards and both tables, from encoded items and kept sequences.

    ``excluded`` is the PCollection of ``(item_id, reason)`` of removed items; the item lookup is
    checked against it, so no kept item can be mistaken for an excluded one. ``compaction`` (nightly
    runs of the ``reference`` layout) copies the items of mostly dead earlier versions.
    """
    pipeline = encoded.pipeline
    if compaction is not None:
        encoded = encoded | "CopyFromSparseVersions" >> compaction
    popularity = sequences | "Popularity" >> CountKeys(
        lambda batch: [item for s in batch_sequences(batch) for item in s.item_ids[:-2]]
    )
    if config.titles:
        titles = pipeline | "ReadTitles" >> ReadKeyedCsv(config.titles, TITLES)
    else:
        titles = pipeline | "NoTitles" >> beam.Create([])
    items = (encoded, popularity, titles) | "ItemCatalog" >> ItemCatalog(
        config.output,
        config.shard_max_samples,
        config.shard_max_bytes,
        index_in_place=config.train_frames == TRAIN_FRAMES_REFERENCE,
    )
    lookup = items["lookup"] | "CheckNoHashClash" >> beam.Map(
        lambda lookup, excluded_items: lookup.check_disjoint(excluded_items),
        beam.pvalue.AsSingleton(excluded_items_of(excluded)),
    )
    users = sequences | "UserShards" >> WriteUserShards(
        lookup,
        config.output,
        config.max_seq_len,
        config.shard_max_samples,
        config.shard_max_bytes,
        config.train_frames,
    )
    tables = (items["tables"], users["tables"]) | "AllTableParts" >> beam.Flatten()
    return WrittenFiles(items["shards"], users["shards"], tables)


def compaction_of(config: IngestConfig, reuse: ReuseFrom | None) -> CopyFromSparseVersions | None:
    """The compaction of a nightly ``reference``-layout run from a base version (reads the manifests of
    the base and of the versions it points into), None where nothing is indexed in place."""
    in_place = config.train_frames == TRAIN_FRAMES_REFERENCE
    if reuse is None or reuse.version is None or not in_place or config.compact_below <= 0:
        return None
    return CopyFromSparseVersions(earlier_version_bytes(reuse.version), config.compact_below)


def build_pipeline(
    pipeline: beam.Pipeline,
    config: IngestConfig,
    sources: list[tuple[int, str, str]],
    progress_every: int = 0,
    reuse: ReuseFrom | None = None,
    publish_with: versions.RunLease | None = None,
) -> None:
    """Add the whole ingest job to ``pipeline``.

    Workers report every ``progress_every`` videos (0: never); ``reuse`` turns on frame reuse.
    With ``publish_with`` (the run's lease on the dataset root), the job's last step publishes the
    version it wrote as ``LATEST`` and releases the root (``PublishAsLatest``).
    """
    source_files = [path for _, path, _ in sources]
    rows = pipeline | "ReadInteractions" >> ReadInteractions(
        sources, timestamp_format=config.timestamp_format
    )
    histories = rows.rows | "GroupIntoHistories" >> GroupIntoHistories(source_files)
    new_items = None
    if config.splits_new_items:
        new_items = histories.histories | "ChooseNewItems" >> ChooseNewItems(
            config.new_items, config.new_items_after
        )
    items = choose_and_encode_items(histories.histories, config, progress_every, reuse, new_items)
    sequences = histories.histories | "BuildUserSequences" >> BuildUserSequences(
        items.excluded, effective_min_length(config.min_user_interactions), source_files, new_items
    )
    written = write_dataset_files(
        items.encoded, sequences.sequences, items.excluded, config, compaction_of(config, reuse)
    )
    table_parts = written.table_parts
    if reuse is not None:  # nightly with videos: the next run plans with the videos that failed
        failed_videos = items.failures | "ItemFailuresTable" >> WriteItemFailures(config.output)
        table_parts = (table_parts, failed_videos) | "EveryTablePart" >> beam.Flatten()
    failure_parts = (
        (rows[FAILED], histories[FAILED], items.failures, sequences[FAILED])
        | "AllFailures" >> beam.Flatten()
        | "CountFailures" >> CountFailures()
        | "WriteFailures" >> WriteFailures(config.output)
    )
    new_split = None
    if new_items is not None:
        singleton = beam.pvalue.AsSingleton
        new_split = (
            sequences.sequences
            | "TestTargetIsNew"
            >> beam.Map(
                lambda batch, new: sum(s.item_ids[-1] in new for s in batch_sequences(batch)),
                singleton(new_items),
            )
            | "CountNewTargets" >> beam.CombineGlobally(sum)
            | "WithNewItemCount" >> beam.Map(lambda users, new: [len(new), users], singleton(new_items))
        )
    summaries = ManifestInputs(
        written.item_shards,
        written.train_shards,
        table_parts,
        failure_parts,
        valid_rows=rows[VALID],
        invalid_rows=rows[FAILED],
        histories=histories.histories,
        items_seen=items.seen,
        new_split=new_split,
    )
    written_version = pipeline | "WriteManifestLast" >> WriteManifestLast(
        config, ingest_sampler(config)[1], summaries, base_version=reuse.version if reuse else None
    )
    if publish_with is not None:
        written_version | "PublishAsLatest" >> PublishAsLatest(
            publish_with, config.keep, config.max_dropped_fraction
        )
