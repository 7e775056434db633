"""The ingest job: interaction logs + raw videos -> one dataset version (docs/FORMAT.md).

``videorec ingest ...`` and ``python -m pipeline.main ...`` both call :func:`main`; tests call
:func:`run` with a list of arguments, which waits for the job. :func:`launch` submits the same job
and returns at once (the Flex Template launcher, deploy/flex_main.py). Only IDs and small records
move through shuffles: frames go from the decoder to fragment files, into item shards, and from item
shards into train shards.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline import versions
from pipeline.options import IngestConfig, parse
from pipeline.summary import format_summary
from transforms import storage
from transforms.failures import CountFailures, WriteFailures, failure_counts
from transforms.interactions import FAILED, ReadInteractions, resolve_inputs
from transforms.item_catalog import ItemCatalog
from transforms.item_lookup import excluded_items_of
from transforms.item_shards import DescribeItemsWithoutFrames, EncodeItems, ReuseFrom, parse_titles
from transforms.manifest import RUN_STATS_FILE, build_manifest, read_manifest, write_manifest
from transforms.sequences import (
    BuildUserSequences,
    CountItemInteractions,
    DroppedItemRecords,
    GroupIntoHistories,
    NeededItems,
    effective_min_length,
    rare_items,
)
from transforms.tables import ITEMS_TABLE, SEQUENCES_TABLE
from transforms.train_shards import WriteUserShards

PROGRESS_EVERY = 50


@dataclass(frozen=True)
class IngestResult:
    """What a finished run wrote: the dataset folder, its manifest, the run's timing and Beam counters."""

    output: str
    manifest: dict
    stats: dict
    counters: dict


def sampler_settings(config: IngestConfig):
    """``(SamplerConfig, manifest "sampler" section)``, or ``(None, None)`` for ID-only datasets."""
    if not config.has_videos:
        return None, None
    from transforms.decode.types import SAMPLER_VERSION, SamplerConfig

    sampler = SamplerConfig(**config.sampler)
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


def finish_dataset(
    _,
    *,
    config: IngestConfig,
    sampler_section,
    item_shards,
    train_shards,
    table_parts,
    failure_parts,
    valid_rows,
    invalid_rows,
    users_seen,
    items_seen,
):
    """Write the manifest (last) from the per-shard and per-part summaries, then remove the work folder."""
    items_parts = [p for p in table_parts if p["table"] == ITEMS_TABLE]
    sequence_parts = [p for p in table_parts if p["table"] == SEQUENCES_TABLE]
    dropped = failure_counts(failure_parts)
    counts = {
        "rows_read": valid_rows + invalid_rows,
        "rows_used": sum(p["interactions"] for p in sequence_parts),
        "rows_dropped": dropped["row"],
        "items_seen": items_seen,
        "items_encoded": sum(p["rows"] for p in items_parts),
        "items_failed": dropped["item"],
        "users_seen": users_seen,
        "users_kept": sum(p["rows"] for p in sequence_parts),
        "users_dropped": dropped["user"],
    }
    manifest = build_manifest(
        config=config.content_config(),
        sampler=sampler_section,
        num_items=counts["items_encoded"],
        num_users=counts["users_kept"],
        max_seq_len=config.max_seq_len,
        item_shards=item_shards,
        train_shards=train_shards,
        tables={ITEMS_TABLE: items_parts, SEQUENCES_TABLE: sequence_parts},
        counts=counts,
        failures=failure_parts,
        dataset_version=config.dataset_version,
    )
    write_manifest(config.output, manifest)
    storage.delete_tree(work_dir(config))
    return manifest["dataset_version"]


def publish_version(_, lease_json: str, keep: int | None) -> list[str]:
    """The job's last step when it was launched without waiting: ``versions.finish_run`` on a worker.

    Publishes the version the lease names as ``LATEST``, releases the root and prunes to ``keep``
    versions; returns the pruned version ids. A retried step that finds its version already
    published only releases the lease.
    """
    lease = versions.RunLease.from_json(lease_json)
    if versions.latest_version_id(lease.root) == lease.version_id:
        versions.release_run_lease(lease)
        return []
    return versions.finish_run(lease, keep=keep)


def work_dir(config: IngestConfig) -> str:
    return config.work_dir or storage.join(config.output, "_work")


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
    histories, config: IngestConfig, progress_every: int, reuse: ReuseFrom | None
) -> ItemOutcomes:
    """Drop rare items, decide which items are needed, and decode (or describe) those."""
    pipeline = histories.pipeline
    sampler_config, _ = sampler_settings(config)
    item_counts = histories | "CountItemInteractions" >> CountItemInteractions()
    rare = item_counts | "RareItems" >> beam.FlatMap(rare_items, config.min_item_interactions)
    needed = histories | "NeededItems" >> NeededItems(
        rare, effective_min_length(config.min_user_interactions)
    )
    undecoded = (item_counts, needed) | "DroppedItems" >> DroppedItemRecords(config.min_item_interactions)
    if config.has_videos:
        encode = EncodeItems(
            config.videos,
            config.video_pattern,
            config.video_map,
            sampler_config,
            work_dir(config),
            progress_every,
            reuse,
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


def write_dataset_files(encoded, sequences, excluded, config: IngestConfig) -> WrittenFiles:
    """Item shards, train shards and both tables, from encoded items and kept sequences.

    ``excluded`` is the PCollection of ``(item_id, reason)`` of removed items; the item lookup is
    checked against it, so no kept item can be mistaken for an excluded one.
    """
    pipeline = encoded.pipeline
    popularity = (
        sequences
        | "TrainingItems" >> beam.FlatMap(lambda s: s.item_ids[:-2])
        | "Popularity" >> beam.combiners.Count.PerElement()
    )
    titles = (
        pipeline
        | "TitlesFile" >> beam.Create([config.titles] if config.titles else [])
        | "ReadTitles"
        >> beam.FlatMap(lambda path: parse_titles(storage.read_bytes(path).decode("utf-8"), path).items())
    )
    items = (encoded, popularity, titles) | "ItemCatalog" >> ItemCatalog(
        config.output, config.shard_max_samples, config.shard_max_bytes
    )
    lookup = items["lookup"] | "CheckNoHashClash" >> beam.Map(
        lambda lookup, excluded_items: lookup.check_disjoint(excluded_items),
        beam.pvalue.AsSingleton(excluded_items_of(excluded)),
    )
    users = sequences | "UserShards" >> WriteUserShards(
        lookup, config.output, config.max_seq_len, config.shard_max_samples, config.shard_max_bytes
    )
    tables = (items["tables"], users["tables"]) | "AllTableParts" >> beam.Flatten()
    return WrittenFiles(items["shards"], users["shards"], tables)


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
    version it wrote as ``LATEST`` and releases the root (``publish_version``).
    """
    source_files = [path for _, path, _ in sources]
    rows = pipeline | "ReadInteractions" >> ReadInteractions(sources)
    histories = rows.rows | "GroupIntoHistories" >> GroupIntoHistories(source_files)
    items = choose_and_encode_items(histories.histories, config, progress_every, reuse)
    sequences = histories.histories | "BuildUserSequences" >> BuildUserSequences(
        items.excluded, effective_min_length(config.min_user_interactions), source_files
    )
    written = write_dataset_files(items.encoded, sequences.sequences, items.excluded, config)
    failure_parts = (
        (rows[FAILED], histories[FAILED], items.failures, sequences[FAILED])
        | "AllFailures" >> beam.Flatten()
        | "CountFailures" >> CountFailures()
        | "WriteFailures" >> WriteFailures(config.output)
    )
    count, singleton, as_list = beam.combiners.Count.Globally, beam.pvalue.AsSingleton, beam.pvalue.AsList
    written_version = (
        pipeline
        | "Finish" >> beam.Create([None])
        | "WriteManifestLast"
        >> beam.Map(
            finish_dataset,
            config=config,
            sampler_section=sampler_settings(config)[1],
            item_shards=as_list(written.item_shards),
            train_shards=as_list(written.train_shards),
            table_parts=as_list(written.table_parts),
            failure_parts=as_list(failure_parts),
            valid_rows=singleton(rows.rows | "CountValidRows" >> count()),
            invalid_rows=singleton(rows[FAILED] | "CountInvalidRows" >> count()),
            users_seen=singleton(histories.histories | "CountUsers" >> count()),
            items_seen=singleton(items.seen | "CountItems" >> count()),
        )
    )
    if publish_with is not None:
        written_version | "PublishAsLatest" >> beam.Map(publish_version, publish_with.to_json(), config.keep)


def job_counters(outcome) -> dict[str, int]:
    """The job's ``videorec`` Beam counters by name (committed values, summed over steps)."""
    totals: dict[str, int] = {}
    for counter in outcome.metrics().query(MetricsFilter().with_namespace("videorec"))["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
    return dict(sorted(totals.items()))


def videos_attempted(manifest: dict) -> int:
    """Videos the sampler was run on: encoded ones plus those it rejected."""
    if manifest["sampler"] is None:
        return 0
    from transforms.decode.types import ERROR_KINDS

    failed = manifest["counts"]["items_failed"]
    return manifest["counts"]["items_encoded"] + sum(failed.get(kind, 0) for kind in ERROR_KINDS)


def run(argv: list[str]) -> IngestResult:
    """Run the ingest job with command-line arguments, wait for it, and return what it wrote.

    With ``--dataset-root`` the run takes the root's lease, writes ``ROOT/versions/<id>/`` (reusing
    the frames of unchanged videos from the ``LATEST`` version), then publishes it as ``LATEST``,
    releases the root and prunes to ``--keep`` versions (see :mod:`pipeline.versions`). A failed
    job releases the root and leaves ``LATEST`` as it was. Otherwise it writes ``--output``.
    """
    config, beam_args, quiet = parse(argv)
    if config.dataset_root is None:
        return run_job(config, beam_args, quiet)
    lease = versions.acquire_run_lease(config.dataset_root, ttl_s=config.lease_ttl_s)
    try:
        versioned, reuse = version_to_write(config, lease)
        result = run_job(versioned, beam_args, quiet, reuse)
    except BaseException:
        versions.release_run_lease(lease)
        raise
    pruned = versions.finish_run(lease, keep=config.keep)
    if not quiet:
        print(f"ingest: published {lease.version_id} as {config.dataset_root}/LATEST", file=sys.stderr)
        if pruned:
            print(f"ingest: pruned {len(pruned)} version(s): {', '.join(pruned)}", file=sys.stderr)
    return result


def launch(argv: list[str]):
    """Submit the ingest job and return its ``PipelineResult`` without waiting for it.

    For launchers that must exit once the job is submitted (a Dataflow Flex Template). With
    ``--dataset-root`` the lease is taken here and the job's last step publishes ``LATEST``,
    releases the root and prunes (``publish_version``); a job that fails on the service keeps the
    lease until ``--lease-ttl`` runs out (docs/INCREMENTAL.md, Operations). No run_stats.json is
    written: the launcher does not see the job end.
    """
    config, beam_args, quiet = parse(argv)
    if config.dataset_root is None:
        return start_job(config, beam_args, quiet)
    lease = versions.acquire_run_lease(config.dataset_root, ttl_s=config.lease_ttl_s)
    try:
        versioned, reuse = version_to_write(config, lease)
        return start_job(versioned, beam_args, quiet, reuse, publish_with=lease)
    except BaseException:
        versions.release_run_lease(lease)
        raise


def version_to_write(config: IngestConfig, lease: versions.RunLease) -> tuple[IngestConfig, ReuseFrom | None]:
    """The config writing the lease's version folder, and (with videos) the version to reuse frames from."""
    root = config.dataset_root
    versioned = replace(
        config, output=versions.version_url(root, lease.version_id), dataset_version=lease.version_id
    )
    if not config.has_videos:
        return versioned, None
    return versioned, ReuseFrom(lease.base_version and versions.version_url(root, lease.base_version))


def start_job(
    config: IngestConfig,
    beam_args: list[str],
    quiet: bool,
    reuse: ReuseFrom | None = None,
    publish_with: versions.RunLease | None = None,
):
    """Build the pipeline for ``config`` and hand it to the runner; returns its ``PipelineResult``."""
    options = PipelineOptions(beam_args)
    FileSystems.set_options(options)
    sources = resolve_inputs(config.interactions, config.format)
    if not quiet:
        kinds = sorted({fmt for _, _, fmt in sources})
        mode = "with videos" if config.has_videos else "ID-only"
        print(
            f"ingest: {len(sources)} interaction file(s) ({', '.join(kinds)}), {mode} -> {config.output}",
            file=sys.stderr,
        )
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        config,
        sources,
        progress_every=0 if quiet else PROGRESS_EVERY,
        reuse=reuse,
        publish_with=publish_with,
    )
    return pipeline.run()


def run_job(
    config: IngestConfig, beam_args: list[str], quiet: bool, reuse: ReuseFrom | None = None
) -> IngestResult:
    """Run the pipeline for ``config`` to the end; write run_stats.json and print the summary.

    With ``reuse``, videos unchanged since that version reuse its frames (see ``EncodeItems``).
    """
    started = time.monotonic()
    outcome = start_job(config, beam_args, quiet, reuse)
    outcome.wait_until_finish()
    wall = time.monotonic() - started
    options = PipelineOptions(beam_args)
    manifest = read_manifest(config.output)
    videos = videos_attempted(manifest)
    direct = options.view_as(DirectOptions)
    stats = {
        "wall_s": round(wall, 3),
        "videos": videos,
        "videos_per_s": round(videos / wall, 3) if wall > 0 else 0.0,
        "runner": options.view_as(StandardOptions).runner,
        "workers": direct.direct_num_workers or 1,
        "running_mode": direct.direct_running_mode,
    }
    stats_json = (json.dumps(stats, indent=2) + "\n").encode()
    storage.write_bytes(storage.join(config.output, RUN_STATS_FILE), stats_json)
    if not quiet:
        print(format_summary(manifest, stats))
    return IngestResult(config.output, manifest, stats, job_counters(outcome))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(argv)
    except (FileNotFoundError, ValueError) as err:
        print(f"videorec ingest: error: {err}", file=sys.stderr)
        return 2
    except versions.VersionError as err:
        print(f"videorec ingest: error: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
