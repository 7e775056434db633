"""The ingest job's last steps: the manifest, written once every file is (:class:`WriteManifestLast`),
and, for a job launched without waiting, publishing the version it wrote (:class:`PublishAsLatest`).

The heavy work is in plain functions: :func:`finish_dataset` (manifest from the file summaries) and
:func:`publish_version` (gates, then ``LATEST``); the transforms only gather their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from dataformat.format import ITEMS_TABLE, SEQUENCES_TABLE, TABLES
from pipeline import versions
from pipeline.gates import GateTripped, gate_problems
from pipeline.options import IngestConfig
from pipeline.ownership import scratch_folder
from transforms import storage
from transforms.failures import failure_counts
from transforms.manifest import build_manifest, read_version_manifest, write_manifest
from transforms.reconcile import REFERENCED_SHARDS, reconcile_dataset_files
from transforms.reuse import earlier_shard_entries
from transforms.sequences import users_in_batch


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
    new_split=None,
    base_version=None,
):
    """Write the manifest (last) from the per-shard and per-part summaries, then remove the work folder.

    ``new_split`` (with ``--new-items``/``--new-items-after``) is ``[new items chosen, kept users whose
    test target is a new item]``, recorded as ``counts.new_items`` and ``counts.users_new_target``.
    Earlier item shards the items table points into are listed as ``base_version``'s manifest lists them.
    """
    items_parts = [p for p in table_parts if p["table"] == ITEMS_TABLE]
    earlier = {path for part in items_parts for path in part.get(REFERENCED_SHARDS, ())}
    if earlier:
        item_shards = [*item_shards, *earlier_shard_entries(base_version, earlier)]
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
    if new_split is not None:
        counts["new_items"], counts["users_new_target"] = new_split
    manifest = build_manifest(
        config=config.content_config(),
        sampler=sampler_section,
        num_items=counts["items_encoded"],
        num_users=counts["users_kept"],
        max_seq_len=config.max_seq_len,
        train_frames=config.train_frames,
        item_shards=item_shards,
        train_shards=train_shards,
        tables={name: [p for p in table_parts if p["table"] == name] for name in TABLES},
        counts=counts,
        failures=failure_parts,
        dataset_version=config.dataset_version,
    )
    reconcile_dataset_files(config.output, manifest)  # before anything is published
    write_manifest(config.output, manifest)
    storage.delete_tree(scratch_folder(config))  # never --work-dir itself (pipeline.ownership)
    return manifest["dataset_version"]


@dataclass
class ManifestInputs:
    """What the manifest summarises, as PCollections of the job.

    ``item_shards`` / ``train_shards`` / ``table_parts`` / ``failure_parts``: summary dicts of the
    files written; ``valid_rows``: ints (valid rows per read split); ``invalid_rows``: failure dicts
    of rows that could not be read; ``histories``: history batches ``(bucket, packed user rows)``;
    ``items_seen``: ``(item_id, interactions)`` of every item seen; ``new_split`` (with
    ``--new-items``): one ``[new items chosen, kept users whose test target is new]``, else None.
    """

    item_shards: beam.PCollection
    train_shards: beam.PCollection
    table_parts: beam.PCollection
    failure_parts: beam.PCollection
    valid_rows: beam.PCollection
    invalid_rows: beam.PCollection
    histories: beam.PCollection
    items_seen: beam.PCollection
    new_split: beam.PCollection | None = None


class WriteManifestLast(beam.PTransform):
    """PBegin -> PCollection[str]: the dataset version id, once the manifest is written (last).

    The manifest waits for every summary in ``inputs`` (side inputs), so it is written only after
    every file it lists; ``sampler_section`` is the manifest's ``sampler`` (None when ID-only), and
    ``base_version`` the version whose item shards the items table may point into.
    """

    def __init__(self, config: IngestConfig, sampler_section, inputs: ManifestInputs, base_version=None):
        super().__init__()
        self.config = config
        self.sampler_section = sampler_section
        self.inputs = inputs
        self.base_version = base_version

    def expand(self, begin):
        return (
            begin
            | "Once" >> beam.Create([None])
            | "WriteManifest"
            >> beam.Map(
                finish_dataset,
                config=self.config,
                sampler_section=self.sampler_section,
                base_version=self.base_version,
                **self.summaries(),
            )
        )

    def summaries(self) -> dict:
        """``finish_dataset``'s keyword arguments from ``inputs``: the file summaries as lists, the
        counts as singletons."""
        inputs, as_list, singleton = self.inputs, beam.pvalue.AsList, beam.pvalue.AsSingleton
        count = beam.combiners.Count.Globally
        summaries = {
            "item_shards": as_list(inputs.item_shards),
            "train_shards": as_list(inputs.train_shards),
            "table_parts": as_list(inputs.table_parts),
            "failure_parts": as_list(inputs.failure_parts),
            "valid_rows": singleton(inputs.valid_rows | "CountValidRows" >> beam.CombineGlobally(sum)),
            "invalid_rows": singleton(inputs.invalid_rows | "CountInvalidRows" >> count()),
            "users_seen": singleton(
                inputs.histories
                | "UsersPerBatch" >> beam.Map(users_in_batch)
                | "CountUsers" >> beam.CombineGlobally(sum)
            ),
            "items_seen": singleton(inputs.items_seen | "CountItems" >> count()),
        }
        if inputs.new_split is not None:
            summaries["new_split"] = singleton(inputs.new_split)
        return summaries


class PublishAsLatest(beam.PTransform):
    """PCollection[str] (the written version id) -> PCollection[list[str]] (the pruned version ids):
    gates, then ``LATEST``, for a job launched without waiting (:func:`publish_version`)."""

    def __init__(self, lease: versions.RunLease, keep: int | None, max_dropped_fraction: float):
        super().__init__()
        self.lease_json, self.keep, self.max_dropped_fraction = lease.to_json(), keep, max_dropped_fraction

    def expand(self, written_version):
        return written_version | "Publish" >> beam.Map(
            publish_version, self.lease_json, self.keep, self.max_dropped_fraction
        )


def publish_version(_, lease_json: str, keep: int | None, max_dropped_fraction: float) -> list[str]:
    """The job's last step when it was launched without waiting: gates, then ``versions.finish_run``.

    Publishes the version the lease names as ``LATEST``, releases the root and prunes to ``keep``
    versions; returns the pruned version ids. A version that trips a gate is deleted and the root
    released (``GateTripped`` fails the job). A retried step that finds its version already
    published only releases the lease.
    """
    lease = versions.RunLease.from_json(lease_json)
    if versions.latest_version_id(lease.root) == lease.version_id:
        versions.release_run_lease(lease)
        return []
    problems = gate_problems(
        read_version_manifest(versions.version_url(lease.root, lease.version_id))["counts"],
        max_dropped_fraction,
    )
    if problems:
        versions.abandon_run(lease)
        raise GateTripped(problems)
    return versions.finish_run(lease, keep=keep)
