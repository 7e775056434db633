"""Dataset roots: immutable versions, the atomically published ``LATEST``, run leases and pruning.

Imports ``blobstore.gcs`` (GCS client), ``dataformat`` and the standard library only: no Beam, no torch.
"""

from pipeline.versions.errors import InvalidVersion, LeaseLost, PublishConflict, RootBusy, VersionError
from pipeline.versions.lease import (
    DEFAULT_LEASE_TTL_S,
    RUN_LOCK,
    LeaseKeeper,
    RunLease,
    acquire_run_lease,
    holder_is_dead,
    read_lease,
    release_run_lease,
    renew_run_lease,
)
from pipeline.versions.pruning import prune
from pipeline.versions.publishing import abandon_run, finish_run, publish
from pipeline.versions.roots import (
    LATEST,
    MANIFEST,
    VERSIONS,
    latest_version_id,
    list_versions,
    new_version_id,
    resolve_latest,
    validate_manifest,
    version_url,
)

__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "LATEST",
    "MANIFEST",
    "RUN_LOCK",
    "VERSIONS",
    "InvalidVersion",
    "LeaseKeeper",
    "LeaseLost",
    "PublishConflict",
    "RootBusy",
    "RunLease",
    "VersionError",
    "abandon_run",
    "acquire_run_lease",
    "finish_run",
    "holder_is_dead",
    "latest_version_id",
    "list_versions",
    "new_version_id",
    "prune",
    "publish",
    "read_lease",
    "release_run_lease",
    "renew_run_lease",
    "resolve_latest",
    "validate_manifest",
    "version_url",
]
