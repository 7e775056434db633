"""One run per ``gs://`` ``--output``: a lease object beside it, created atomically.

A local ``--output`` is locked with ``flock`` (``pipeline.ownership.output_lock``); GCS has no locks.
A run to ``gs://B/P/NAME`` creates ``gs://B/P/.NAME.ingest.lock`` with the compare-and-swap nightly
mode's ``RUN.lock`` uses (``pipeline.versions.folders``: an upload with ``if_generation_match=0``, "must
not exist"), so of two runs only one creates it; the other exits 3 naming the holder. The lease
names its holder (``host:pid``), its start and its expiry; the holder renews it every
:data:`LEASE_TTL_S` / 3 while the run lasts and deletes it at the end (only its own generation). A
lease that expired, or whose holder process is gone (seen from the same host), is taken over by the
same compare-and-swap on its generation, so a killed run never blocks the output for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator

from pipeline.versions import VersionError
from pipeline.versions.folders import folder_at, process_is_dead

LOCK_SUFFIX = ".ingest.lock"
"""A run's lock beside its output: ``PARENT/.NAME.ingest.lock`` (a file locally, an object on GCS)."""

LEASE_TTL_S = 3600.0
"""How long a ``gs://`` lease lasts without renewal: a holder on another host that died frees the
output at most this long after its last renewal."""

log = logging.getLogger(__name__)


class OutputBusy(VersionError):
    """Another live ingest writes the same ``--output`` (exit 3, like a busy dataset root)."""


def lease_location(output: str) -> tuple[str, str]:
    """(parent URL, object name) of the lease of ``gs://`` ``output``."""
    parent, _, name = output.rstrip("/").rpartition("/")
    if parent.rstrip("/") == "gs:":  # the bucket itself: the lease sits in it
        return output.rstrip("/"), LOCK_SUFFIX
    return parent, f".{name}{LOCK_SUFFIX}"


def _parsed(text: str) -> dict:
    try:
        lease = json.loads(text)
    except ValueError:
        return {}
    return lease if isinstance(lease, dict) else {}


def _is_live(lease: dict) -> bool:
    """An unexpired lease whose holder is not seen dead on this host (an unreadable one is not live)."""
    if not isinstance(lease.get("expires_at"), int | float) or lease["expires_at"] <= time.time():
        return False
    host, _, pid = str(lease.get("holder", "")).rpartition(":")
    return not (host == socket.gethostname() and pid.isdigit() and process_is_dead(int(pid)))


def _busy(output: str, lease: dict) -> OutputBusy:
    return OutputBusy(
        f"--output {output} is being written by run {lease.get('holder', 'unknown')} "
        f"(started {lease.get('started', 'at an unknown time')}); wait for it to finish, or choose "
        "another --output"
    )


def take_lease(output: str, ttl_s: float = LEASE_TTL_S) -> dict:
    """Create the lease of ``gs://`` ``output`` (or take over a dead or expired one); returns it.

    Raises:
        OutputBusy: a live run holds it, or another run created it at the same moment.
    """
    parent, name = lease_location(output)
    folder = folder_at(parent)
    text, token = folder.read_pointer(name)
    if text:
        held = _parsed(text)
        if _is_live(held):
            raise _busy(output, held)
        log.warning("%s: taking over the lease of run %s (expired or its process is gone)", output, held)
    lease = {
        "run": secrets.token_hex(8),
        "holder": f"{socket.gethostname()}:{os.getpid()}",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "expires_at": time.time() + ttl_s,
    }
    if not folder.swap_pointer(name, json.dumps(lease, sort_keys=True), token):
        text, _ = folder.read_pointer(name)
        raise _busy(output, _parsed(text or "{}"))
    return lease


def _swap_own(output: str, lease: dict, new: dict | None) -> bool:
    """Replace (``new``) or delete (None) the lease object if it is still ``lease``'s; False if not."""
    parent, name = lease_location(output)
    folder = folder_at(parent)
    text, token = folder.read_pointer(name)
    if not text or _parsed(text).get("run") != lease["run"]:
        return False
    return folder.swap_pointer(name, None if new is None else json.dumps(new, sort_keys=True), token)


def release_lease(output: str, lease: dict) -> bool:
    """Delete the lease if it is still ours; False (nothing changed) if it was taken over."""
    return _swap_own(output, lease, None)


@contextlib.contextmanager
def output_lease(output: str, ttl_s: float = LEASE_TTL_S) -> Iterator[dict]:
    """Hold the lease of ``gs://`` ``output`` while the run writes it, renewed every ``ttl_s / 3``.

    Raises:
        OutputBusy: another live run holds it (its ``host:pid`` and start time in the message).
    """
    lease = take_lease(output, ttl_s)
    stop = threading.Event()

    def renew() -> None:
        current = lease
        while not stop.wait(ttl_s / 3):
            renewed = dict(current, expires_at=time.time() + ttl_s)
            try:
                if not _swap_own(output, current, renewed):
                    log.error("%s: the run's lease was taken over by another run", output)
                    return
                current = renewed
            except Exception as err:  # noqa: BLE001 - a failed renewal is retried at the next tick
                log.warning("renewing the lease on %s failed (will retry): %s", output, err)

    keeper = threading.Thread(target=renew, daemon=True, name="output-lease")
    keeper.start()
    try:
        yield lease
    finally:
        stop.set()
        keeper.join()
        with contextlib.suppress(Exception):  # an expired lease is taken over by the next run anyway
            release_lease(output, lease)
