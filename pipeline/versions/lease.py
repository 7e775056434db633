"""The run lease: one ingest run writes a dataset root at a time (``ROOT/RUN.lock``, compare-and-swap).

A lease ends when its run releases it, when it expires (``expires_at``), or, for a lease whose
holder process waits for the job (``held_by_process``), as soon as that process is seen dead on the
same host: the next run breaks it at once instead of waiting for the expiry. A waiting run keeps
its lease alive with :class:`LeaseKeeper`, so a job longer than the TTL does not lose its root.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.versions.errors import LeaseLost, RootBusy
from pipeline.versions.folders import folder_at, process_is_dead
from pipeline.versions.roots import latest_version_id, new_version_id

RUN_LOCK = "RUN.lock"

log = logging.getLogger(__name__)


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
    held_by_process: bool = False
    """True when the ``holder`` process waits for the job and releases the lease itself: once that
    process is dead (seen from the same host), the lease is abandoned. False for a launcher that
    exits after submitting the job (the job publishes and releases)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunLease:
        return cls(**json.loads(text))


def read_lease(root: str | Path) -> RunLease | None:
    """The lease recorded in ``ROOT/RUN.lock`` (live or expired), or None."""
    text, _ = folder_at(root).read_pointer(RUN_LOCK)
    return RunLease.from_json(text) if text else None


def holder_is_dead(lease: RunLease) -> bool:
    """True when ``lease`` is held by a waiting process on this host that no longer runs."""
    host, _, pid = lease.holder.rpartition(":")
    if not lease.held_by_process or host != socket.gethostname() or not pid.isdigit():
        return False
    return process_is_dead(int(pid))


def acquire_run_lease(
    root: str | Path, *, ttl_s: float = DEFAULT_LEASE_TTL_S, held_by_process: bool = False
) -> RunLease:
    """Take the root for one run: records a new version id and the current ``LATEST`` as its base.

    ``held_by_process``: this process waits for the job and releases the lease (``ingest`` without
    ``launch``); if it dies without releasing, the next run on this host breaks the lease at once.
    Takes over an expired lease, or one whose holder is dead (:func:`holder_is_dead`). Raises
    ``RootBusy`` when a live lease exists.
    """
    folder = folder_at(root)
    text, token = folder.read_pointer(RUN_LOCK)
    if text:
        held = RunLease.from_json(text)
        if held.expires_at > time.time() and holder_is_dead(held):
            log.warning(
                "%s: breaking the lease of run %s: its process %s is gone (version %s was never published)",
                folder.url,
                held.run_id,
                held.holder,
                held.version_id,
            )
        elif held.expires_at > time.time():
            raise RootBusy(
                f"{folder.url} is being written by run {held.run_id} ({held.holder}, version {held.version_id}) "
                f"until {datetime.fromtimestamp(held.expires_at, UTC).isoformat()}"
            )
    lease = RunLease(
        root=folder.url,
        run_id=secrets.token_hex(8),
        version_id=new_version_id(),
        base_version=latest_version_id(root),
        holder=f"{socket.gethostname()}:{os.getpid()}",
        expires_at=time.time() + ttl_s,
        held_by_process=held_by_process,
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


class LeaseKeeper:
    """Renews a lease every ``ttl_s / 3`` from a background thread while a waiting run's job runs.

    ``with LeaseKeeper(lease, ttl_s) as keeper: ...``; afterwards ``keeper.lease`` is the latest
    renewal and ``keeper.lost`` the ``LeaseLost`` that stopped renewing, if any (publishing then
    fails with ``LeaseLost`` too). Stop it before publishing or releasing: they compare-and-swap
    ``RUN.lock`` as well.
    """

    def __init__(self, lease: RunLease, ttl_s: float, every_s: float | None = None):
        self.lease = lease
        self.ttl_s = ttl_s
        self.every_s = every_s if every_s is not None else ttl_s / 3
        self.lost: LeaseLost | None = None
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-keeper")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.lease = renew_run_lease(self.lease, ttl_s=self.ttl_s)
                self.renewals += 1
            except LeaseLost as lost:
                self.lost = lost
                log.error("%s", lost)
                return
            except Exception as err:  # noqa: BLE001 - a failed renewal is retried at the next tick
                log.warning("renewing the lease on %s failed (will retry): %s", self.lease.root, err)
