"""The run lease: one ingest run writes a dataset root at a time (``ROOT/RUN.lock``, compare-and-swap)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipeline.versions.errors import LeaseLost, RootBusy
from pipeline.versions.folders import folder_at
from pipeline.versions.roots import latest_version_id, new_version_id

RUN_LOCK = "RUN.lock"


DEFAULT_LEASE_TTL_S = 12 * 3600.0
"""Default run lease: long enough for a full Dataflow ingest; renew it for longer runs."""


@dataclass(frozen=True)
class RunLease:
    """A run's exclusive right to write a dataset root until ``expires_at``.

    Plain data (JSON-serialisable), so the launcher can take it and a pipeline step on a worker can
    publish with it and release it.
    """

    root: str
    """The dataset root the lease is on."""
    run_id: str
    """Unique id of the holding run."""
    version_id: str
    """The version this run writes (``ROOT/versions/<version_id>/``)."""
    base_version: str | None
    """``LATEST`` when the lease was taken: what the run reuses and must pass to ``publish``."""
    holder: str
    """``host:pid`` of the process that took the lease (for people reading RUN.lock)."""
    expires_at: float
    """Unix time after which another run may take the root over."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunLease:
        return cls(**json.loads(text))


def read_lease(root: str | Path) -> RunLease | None:
    """The lease recorded in ``ROOT/RUN.lock`` (live or expired), or None."""
    text, _ = folder_at(root).read_pointer(RUN_LOCK)
    return RunLease.from_json(text) if text else None


def acquire_run_lease(root: str | Path, *, ttl_s: float = DEFAULT_LEASE_TTL_S) -> RunLease:
    """Take the root for one run: records a new version id and the current ``LATEST`` as its base.

    Takes over an expired lease (its run is presumed dead). Raises ``RootBusy`` when a live lease exists.
    """
    folder = folder_at(root)
    text, token = folder.read_pointer(RUN_LOCK)
    if text:
        held = RunLease.from_json(text)
        if held.expires_at > time.time():
            raise RootBusy(
                f"{folder.url} is being written by run {held.run_id} ({held.holder}, version {held.version_id}) "
                f"until {datetime.fromtimestamp(held.expires_at, timezone.utc).isoformat()}"
            )
    lease = RunLease(
        root=folder.url,
        run_id=secrets.token_hex(8),
        version_id=new_version_id(),
        base_version=latest_version_id(root),
        holder=f"{socket.gethostname()}:{os.getpid()}",
        expires_at=time.time() + ttl_s,
    )
    if not folder.swap_pointer(RUN_LOCK, lease.to_json(), token):
        raise RootBusy(f"another run took {folder.url} at the same moment")
    # LATEST may have moved between reading it and taking the lock (a run finishing): read it again.
    base = latest_version_id(root)
    if base != lease.base_version:
        lease = _replace_lease(folder, lease, base_version=base)
    return lease


def renew_run_lease(lease: RunLease, *, ttl_s: float = DEFAULT_LEASE_TTL_S) -> RunLease:
    """Push the lease's expiry to ``now + ttl_s``; raises ``LeaseLost`` if it is no longer held."""
    require_lease(lease)
    return _replace_lease(folder_at(lease.root), lease, expires_at=time.time() + ttl_s)


def release_run_lease(lease: RunLease) -> bool:
    """Give the root back. Returns False (and changes nothing) if the lease was already lost."""
    folder = folder_at(lease.root)
    text, token = folder.read_pointer(RUN_LOCK)
    if not text or RunLease.from_json(text).run_id != lease.run_id:
        return False
    return folder.swap_pointer(RUN_LOCK, None, token)


def require_lease(lease: RunLease) -> None:
    """Return if ``lease`` still holds its root; raise ``LeaseLost`` if it was taken over, released or expired."""
    held = read_lease(lease.root)
    if held is None or held.run_id != lease.run_id:
        raise LeaseLost(f"run {lease.run_id} no longer holds {lease.root}")
    if held.expires_at <= time.time():
        raise LeaseLost(f"the lease of run {lease.run_id} on {lease.root} expired")


def _replace_lease(folder, lease: RunLease, **changes) -> RunLease:
    text, token = folder.read_pointer(RUN_LOCK)
    if not text or RunLease.from_json(text).run_id != lease.run_id:
        raise LeaseLost(f"run {lease.run_id} no longer holds {folder.url}")
    updated = RunLease(**{**asdict(lease), **changes})
    if not folder.swap_pointer(RUN_LOCK, updated.to_json(), token):
        raise LeaseLost(f"{RUN_LOCK} of {folder.url} changed under run {lease.run_id}")
    return updated
