"""Run orchestration for dataset roots: the lease, the version a run writes, publishing and pruning.

``pipeline.main`` runs the job; with ``--dataset-root`` it goes through :func:`run_on_root` (wait
for the job, then publish) or :func:`launch_on_root` (the job's last step publishes).
"""

from __future__ import annotations

import sys
from dataclasses import replace

from pipeline import versions
from pipeline.options import IngestConfig
from transforms.item_shards import ReuseFrom


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


def version_to_write(config: IngestConfig, lease: versions.RunLease) -> tuple[IngestConfig, ReuseFrom | None]:
    """The config writing the lease's version folder, and (with videos) the version to reuse frames from."""
    root = config.dataset_root
    versioned = replace(
        config, output=versions.version_url(root, lease.version_id), dataset_version=lease.version_id
    )
    if not config.has_videos:
        return versioned, None
    return versioned, ReuseFrom(lease.base_version and versions.version_url(root, lease.base_version))


def run_on_root(config: IngestConfig, run_job, quiet: bool):
    """Take the root's lease, run ``run_job(config, reuse)`` for a new version, publish it and prune.

    A failed job releases the root and leaves ``LATEST`` as it was.
    """
    lease = versions.acquire_run_lease(config.dataset_root, ttl_s=config.lease_ttl_s)
    try:
        versioned, reuse = version_to_write(config, lease)
        result = run_job(versioned, reuse)
    except BaseException:
        versions.release_run_lease(lease)
        raise
    pruned = versions.finish_run(lease, keep=config.keep)
    if not quiet:
        print(f"ingest: published {lease.version_id} as {config.dataset_root}/LATEST", file=sys.stderr)
        if pruned:
            print(f"ingest: pruned {len(pruned)} version(s): {', '.join(pruned)}", file=sys.stderr)
    return result


def launch_on_root(config: IngestConfig, start_job):
    """Take the root's lease and submit ``start_job(config, reuse, lease)``, whose last step publishes."""
    lease = versions.acquire_run_lease(config.dataset_root, ttl_s=config.lease_ttl_s)
    try:
        versioned, reuse = version_to_write(config, lease)
        return start_job(versioned, reuse, lease)
    except BaseException:
        versions.release_run_lease(lease)
        raise
