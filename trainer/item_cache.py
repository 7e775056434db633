"""A machine-wide cache of remote item shards: each fetched whole, once per machine, and checked.

The item store (:mod:`trainer.item_store`) reads frames by offset from local files. Item shards of a
dataset on ``gs://`` or ``http(s)://`` are first copied here, whole and front to back
(:func:`trainer.storage.open_url`, retried and resumed), never item by item:

- **where**: ``FOLDER/<dataset version>/<shard path, sha256 prefix>.tar``, so a later run of the same
  version reuses the copy, and a version whose shard changed under the same path cannot; a shard a
  nightly version indexes in an earlier version's folder (``../<version>/items/...``) is kept under
  that version's name, so the versions share one copy;
- **checked**: the copy's size and sha256 must be the manifest's before it is published (written
  under a temporary name, then renamed atomically); a copy that fails the check is deleted;
- **shared**: every rank and loader worker of the machine uses the same folder. A per-shard ``flock``
  makes one process fetch while the others wait and then reuse its copy; a process that reads a
  shard holds a shared lock on it, so no other process evicts it meanwhile;
- **bounded**: before a fetch, least-recently-used whole shards (by modification time, touched on
  each use) that no process holds are deleted until the new shard fits in ``max_bytes``. A shard
  larger than the limit on its own is still fetched, with a warning.

A shard that cannot be fetched or fails its check raises :class:`ShardUnavailable` (one line naming
it); the store counts its items as lost.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import posixpath
from pathlib import Path

from dataformat.format import sanitize_key
from trainer import storage

log = logging.getLogger(__name__)

CHUNK = 1 << 20
LOCK_SUFFIX = ".lock"
SHARD_SUFFIX = ".tar"


def default_cache_folder() -> str:
    """``$XDG_CACHE_HOME/videorec/item-shards`` (``~/.cache/videorec/item-shards`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "videorec", "item-shards")


class ShardUnavailable(OSError):
    """An item shard that is missing, cannot be fetched, or is not the manifest's (size, sha256)."""


class HeldShard:
    """A local shard file and the shared lock that keeps the cache from evicting it while it is read."""

    def __init__(self, path: str, lock_fd: int | None):
        self.path, self._lock_fd = path, lock_fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops its flock
            self._lock_fd = None


class ShardCache:
    """Fetches remote item shards into ``folder`` (see the module docstring); ``max_bytes`` bounds it."""

    def __init__(self, folder: str, max_bytes: int):
        self.folder, self.max_bytes = Path(folder or default_cache_folder()), int(max_bytes)

    def path_for(self, version: str, shard_path: str, sha256: str) -> Path:
        """Where the copy of ``shard_path`` of dataset ``version`` lives (a shard of an earlier version,
        ``../<version_id>/items/...``, is kept under that version's name, and shared with it).

        Raises:
            ShardUnavailable: ``shard_path`` leads out of the cache folder.
        """
        stem = posixpath.normpath(f"{sanitize_key(version)}/{shard_path.removesuffix(SHARD_SUFFIX)}")
        if stem.startswith("..") or posixpath.isabs(stem):
            raise ShardUnavailable(f"shard path {shard_path!r} leads out of the item cache")
        return self.folder / f"{stem}.{sha256[:16] or 'unhashed'}{SHARD_SUFFIX}"

    def hold(self, url: str, version: str, entry: dict) -> HeldShard:
        """The shard at ``url`` (manifest ``entry``: ``path``, ``bytes``, ``sha256``) as a local file,
        fetched unless a checked copy is here already, and held until :meth:`HeldShard.release`.

        Raises:
            ShardUnavailable: it cannot be fetched, or its size or sha256 is not the manifest's.
        """
        target = self.path_for(version, entry["path"], str(entry.get("sha256") or ""))
        target.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(str(target) + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_SH)  # readers share; fetching and eviction need it alone
            if not _copy_is_complete(target, entry):  # (nobody reads an incomplete shard: no reader waits)
                fcntl.flock(lock_fd, fcntl.LOCK_EX)  # one fetcher; the others wait here, then reuse it
                if not _copy_is_complete(target, entry):
                    self._make_room(int(entry.get("bytes") or 0), target)
                    _fetch(url, entry, target)
                fcntl.flock(lock_fd, fcntl.LOCK_SH)
            os.utime(target)  # least recently used is evicted first
        except BaseException:
            os.close(lock_fd)
            raise
        return HeldShard(str(target), lock_fd)

    def _make_room(self, needed: int, keep: Path) -> None:
        """Delete least-recently-used shards no process holds until ``needed`` more bytes fit."""
        with _locked(self.folder / ("cache" + LOCK_SUFFIX)):
            shards = sorted(
                (p for p in self.folder.rglob("*" + SHARD_SUFFIX) if p != keep),
                key=lambda p: p.stat().st_mtime,
            )
            used = sum(p.stat().st_size for p in shards)
            for shard in shards:
                if used + needed <= self.max_bytes:
                    break
                size = shard.stat().st_size
                if _evict(shard):
                    used -= size
            if used + needed > self.max_bytes:
                log.warning(
                    "item cache %s: %d bytes in use plus %d to fetch exceed --item-cache-max-gb %.3g",
                    self.folder,
                    used,
                    needed,
                    self.max_bytes / 1e9,
                )


def _copy_is_complete(target: Path, entry: dict) -> bool:
    """Whether a checked copy is there (copies are published only after their check)."""
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        return False
    return "bytes" not in entry or size == int(entry["bytes"])


def _fetch(url: str, entry: dict, target: Path) -> None:
    """Copy ``url`` whole to ``target`` through a temporary file, checking size and sha256 first."""
    temporary = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest, size = hashlib.sha256(), 0
    try:
        with storage.open_url(url) as stream, open(temporary, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        expected_bytes, expected_sha = entry.get("bytes"), entry.get("sha256")
        if expected_bytes is not None and size != int(expected_bytes):
            raise ShardUnavailable(f"shard {url} has {size} bytes, the manifest says {expected_bytes}")
        if expected_sha and digest.hexdigest() != expected_sha:
            raise ShardUnavailable(f"shard {url}: its sha256 differs from the manifest's")
        os.replace(temporary, target)
    except ShardUnavailable:
        raise
    except Exception as exn:  # noqa: BLE001 - any failure to fetch is one line about this shard
        raise ShardUnavailable(
            f"shard {url} could not be fetched ({' '.join(str(exn).split())[:160]})"
        ) from exn
    finally:
        temporary.unlink(missing_ok=True)
    log.info("item cache: fetched %s (%d bytes) to %s", url, size, target)


def _evict(shard: Path) -> bool:
    """Delete ``shard`` if no process holds it; whether it was deleted."""
    try:
        fd = os.open(str(shard) + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        shard.unlink(missing_ok=True)
        log.info("item cache: evicted %s", shard)
        return True
    finally:
        os.close(fd)


class _locked:
    """``with _locked(path):`` an exclusive flock on ``path`` (created if needed)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
        return False
