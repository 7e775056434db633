"""Publishing a version as ``LATEST`` and the end of an ingest run (publish, release, prune).

Two runs that started from the same ``LATEST`` can never both publish, and a run killed at any point
leaves ``LATEST`` naming the last version that was published (versions are validated before publishing).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.versions.errors import PublishConflict
from pipeline.versions.folders import folder_at
from pipeline.versions.lease import RunLease, release_run_lease, require_lease
from pipeline.versions.pruning import prune
from pipeline.versions.roots import (
    LATEST,
    MANIFEST,
    VERSIONS,
    latest_version_id,
    validate_manifest,
    version_url,
)


def publish(
    root: str | Path,
    version_id: str,
    expected_previous: str | None,
    *,
    lease: RunLease | None = None,
    verify_sha256: bool = True,
) -> None:
    """Validate version ``version_id`` and make it ``LATEST``, only if ``LATEST`` still names ``expected_previous``.

    ``expected_previous`` is the version the run started from (None: the root had no ``LATEST``).
    With ``lease``, also refuses to publish when that lease is no longer held.

    Raises ``InvalidVersion`` (nothing published), ``LeaseLost``, or ``PublishConflict`` when another
    run changed ``LATEST`` since this run read it.
    """
    validate_manifest(version_url(root, version_id), verify_sha256=verify_sha256)
    if lease is not None:
        require_lease(lease)
    folder = folder_at(root)
    text, token = folder.read_pointer(LATEST)
    current = text.strip() if text else None
    if current != expected_previous:
        raise PublishConflict(
            f"{LATEST} of {folder.url} is {current!r}, this run started from {expected_previous!r}"
        )
    if not folder.swap_pointer(LATEST, f"{version_id}\n", token):
        raise PublishConflict(f"{LATEST} of {folder.url} changed while publishing {version_id}")


def finish_run(lease: RunLease | str, *, keep: int | None = None, verify_sha256: bool = True) -> list[str]:
    """The end of an ingest run: publish the lease's version, release the root, prune to ``keep`` versions.

    ``lease`` may be the ``RunLease`` or its JSON, so this can run as the job's last step on a worker.
    The lease is released even when publishing fails (the error is then raised: the run failed and its
    version stays unpublished). Pruning comes after the release, since a live lease protects its base
    version. Returns the version ids that pruning deleted.
    """
    lease = RunLease.from_json(lease) if isinstance(lease, str) else lease
    try:
        publish(lease.root, lease.version_id, lease.base_version, lease=lease, verify_sha256=verify_sha256)
    finally:
        release_run_lease(lease)
    return prune(lease.root, keep=keep) if keep is not None else []


def abandon_run(lease: RunLease) -> bool:
    """A failed or interrupted run's clean-up: delete its unpublished version folder, release the root.

    The folder is deleted only while ``LATEST`` does not name it (manifest first, as ``prune`` does),
    and only if the lease is still this run's; returns whether the lease was released.
    """
    if latest_version_id(lease.root) != lease.version_id:
        version = folder_at(lease.root).child(f"{VERSIONS}/{lease.version_id}")
        version.delete_file(MANIFEST)
        version.delete_tree()
    return release_run_lease(lease)
