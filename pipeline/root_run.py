"""``--dataset-root`` runs: take the root's lease, write a new version, gate it, publish it as
``LATEST``, release the root, prune.

- :func:`run_on_root`: the lease is renewed while the job runs; a failed, refused or interrupted
  run deletes its version and releases the root (``LATEST`` stays as it was).
- :func:`launch_on_root`: the same checks, for a launcher that submits the job and exits; the job's
  last step (``pipeline.last_steps.PublishAsLatest``) checks the gates and publishes.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from pipeline import job_watchdog, ownership, versions
from pipeline.gates import check_gates
from pipeline.interrupts import Interrupted, interrupts_raise
from pipeline.options import IngestConfig
from pipeline.preflight import check_inputs
from pipeline.staged_output import announce, remove_unlisted_files
from transforms.reuse import ReuseFrom


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
    """Check inputs, take the root's lease, run ``run_job(config, reuse)`` for a new version, gate,
    publish it and prune.

    The lease is renewed while the job runs (``versions.LeaseKeeper``). A failed, refused
    (``GateTripped``) or interrupted (``Interrupted``) run deletes its version and releases the
    root; ``LATEST`` stays as it was.
    """
    announce(config, quiet)
    with ownership.own_work_dir(config):
        check_inputs(config)
        return _run_version(config, run_job, quiet)


def _run_version(config: IngestConfig, run_job, quiet: bool):
    lease = versions.acquire_run_lease(config.dataset_root, ttl_s=config.lease_ttl_s, held_by_process=True)
    keeper = versions.LeaseKeeper(lease, config.lease_ttl_s)
    with interrupts_raise() as signals:
        try:
            with keeper, job_watchdog.cleanup_if_aborted(lambda: versions.abandon_run(keeper.lease)):
                versioned, reuse = version_to_write(config, lease)
                result = run_job(versioned, reuse)
            check_gates(result.manifest, config.max_dropped_fraction)
            remove_unlisted_files(versioned.output, result.manifest, quiet)
        except BaseException:
            versions.abandon_run(keeper.lease)
            if signals.received:
                cleaned = f"removed unpublished version {lease.version_id} and released the root"
                raise Interrupted(signals.received, cleaned) from None
            raise
    lease = keeper.lease
    pruned = versions.finish_run(lease, keep=config.keep)
    if not quiet:
        print(f"ingest: published {lease.version_id} as {config.dataset_root}/LATEST", file=sys.stderr)
        if pruned:
            print(f"ingest: pruned {len(pruned)} version(s): {', '.join(pruned)}", file=sys.stderr)
    return result


def launch_on_root(config: IngestConfig, start_job):
    """Check inputs, take the root's lease and submit ``start_job(config, reuse, lease)``, whose last
    step gates and publishes. The launcher exits after submitting, so the lease is not renewed."""
    check_inputs(config)
    lease = versions.acquire_run_lease(config.dataset_root, ttl_s=config.lease_ttl_s)
    try:
        versioned, reuse = version_to_write(config, lease)
        return start_job(versioned, reuse, lease)
    except BaseException:
        versions.release_run_lease(lease)
        raise
