"""Dataset roots: immutable versions, an atomically published ``LATEST`` pointer, run leases, pruning.

Layout of a dataset root (a local folder or ``gs://bucket/prefix``)::

    ROOT/versions/<version_id>/   one complete dataset in the docs/FORMAT.md layout, never modified once published
    ROOT/LATEST                   one line: the version id trainers should read
    ROOT/RUN.lock                 JSON lease of the ingest run currently writing this root (absent when idle)

Every change to the two small pointer files (``LATEST``, ``RUN.lock``) is a compare-and-swap:

- on GCS, an upload or delete with ``if_generation_match`` set to the generation the caller read
  (0: "must not exist"), so the service rejects the write when anyone changed the object since;
- on a local path, the read-compare-write runs while holding ``ROOT/.swap.lock``, a file created with
  ``O_CREAT | O_EXCL`` (only one process can create it), and the new content is written to a temporary
  file, fsync'ed and moved over the old one with ``os.replace`` (readers see the old or the new line,
  never a partial one). A lock left by a killed process is broken when its process is gone (same
  host) or when it is older than ``SWAP_LOCK_STALE_S``.

So two runs that started from the same ``LATEST`` can never both publish, and a run killed at any point
leaves ``LATEST`` naming the last version that was published (versions are validated before publishing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from transforms.storage import gcs_client, split_gcs_url

LATEST = "LATEST"
RUN_LOCK = "RUN.lock"
SWAP_LOCK = ".swap.lock"
VERSIONS = "versions"
MANIFEST = "manifest.json"

SWAP_LOCK_STALE_S = 60.0
"""A swap lock this old is abandoned: the critical section it guards takes milliseconds."""

DEFAULT_LEASE_TTL_S = 12 * 3600.0
"""Default run lease: long enough for a full Dataflow ingest; renew it for longer runs."""


class VersionError(Exception):
    """Base class of the errors raised by this module."""


class InvalidVersion(VersionError):
    """A version folder is incomplete or does not match its manifest; ``problems`` lists every defect."""

    def __init__(self, version_url: str, problems: list[str]):
        self.version_url = version_url
        self.problems = problems
        super().__init__(f"{version_url} is not a valid dataset version: " + "; ".join(problems))


class PublishConflict(VersionError):
    """``LATEST`` no longer holds the version the run started from: another run published first."""


class RootBusy(VersionError):
    """Another run holds a live lease on the dataset root."""


class LeaseLost(VersionError):
    """The run's lease expired and was taken over, or was released, before the run finished."""


# --------------------------------------------------------------------------------------------------
# Storage: a folder on the local filesystem or under a GCS prefix, with compare-and-swap on small files
# --------------------------------------------------------------------------------------------------


class _LocalFolder:
    """A local directory. Pointer tokens are the pointer's text (None when absent)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.url = str(self.path)

    def child(self, relpath: str) -> _LocalFolder:
        return _LocalFolder(self.path / relpath)

    def sibling(self, name: str) -> _LocalFolder:
        return _LocalFolder(self.path.parent / name)

    def read_pointer(self, name: str) -> tuple[str | None, str | None]:
        try:
            text = (self.path / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        return text, text

    def swap_pointer(self, name: str, new_text: str | None, expected_token: str | None) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        with _swap_lock(self.path / SWAP_LOCK):
            current, _ = self.read_pointer(name)
            if current != expected_token:
                return False
            target = self.path / name
            if new_text is None:
                target.unlink()
            else:
                _write_durably(target, new_text)
            _fsync_dir(self.path)
            return True

    def sizes(self) -> dict[str, int]:
        """Size of every file under the folder, keyed by its path relative to the folder."""
        if not self.path.is_dir():
            return {}
        return {
            p.relative_to(self.path).as_posix(): p.stat().st_size for p in self.path.rglob("*") if p.is_file()
        }

    def read_bytes(self, relpath: str) -> bytes | None:
        try:
            return (self.path / relpath).read_bytes()
        except FileNotFoundError:
            return None

    def sha256(self, relpath: str) -> str:
        digest = hashlib.sha256()
        with open(self.path / relpath, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def subfolders(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir())

    def delete_file(self, relpath: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / relpath).unlink()

    def delete_tree(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class _GcsFolder:
    """A GCS prefix. Pointer tokens are object generations (0 when absent)."""

    def __init__(self, url: str, client=None):
        self.bucket_name, self.prefix = split_gcs_url(url)
        self.url = f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = gcs_client()
        return self._client

    @property
    def bucket(self):
        return self.client.bucket(self.bucket_name)

    def _name(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def child(self, relpath: str) -> _GcsFolder:
        return _GcsFolder(f"{self.url}/{relpath}", client=self._client)

    def sibling(self, name: str) -> _GcsFolder:
        return _GcsFolder(f"{self.url.rpartition('/')[0]}/{name}", client=self._client)

    def read_pointer(self, name: str) -> tuple[str | None, int]:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        for _ in range(5):  # the object may be replaced between reading its metadata and its bytes
            blob = self.bucket.get_blob(self._name(name))
            if blob is None:
                return None, 0
            try:
                data = blob.download_as_bytes(if_generation_match=blob.generation)
            except (PreconditionFailed, NotFound):
                continue
            return data.decode("utf-8"), blob.generation
        raise VersionError(f"{self.url}/{name} keeps changing while being read")

    def swap_pointer(self, name: str, new_text: str | None, expected_token: int) -> bool:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = self.bucket.blob(self._name(name))
        try:
            if new_text is None:
                blob.delete(if_generation_match=expected_token)
            else:
                blob.upload_from_string(
                    new_text.encode("utf-8"), content_type="text/plain", if_generation_match=expected_token
                )
            return True
        except (PreconditionFailed, NotFound):
            # A retried request whose first attempt succeeded also lands here: check what is stored now.
            current, _ = self.read_pointer(name)
            return current == new_text

    def sizes(self) -> dict[str, int]:
        base = f"{self.prefix}/" if self.prefix else ""
        return {
            blob.name[len(base) :]: blob.size
            for blob in self.client.list_blobs(self.bucket_name, prefix=base)
        }

    def read_bytes(self, relpath: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._name(relpath)).download_as_bytes()
        except NotFound:
            return None

    def sha256(self, relpath: str) -> str:
        sink = _HashingSink()
        self.bucket.blob(self._name(relpath)).download_to_file(sink)
        return sink.digest.hexdigest()

    def subfolders(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.list_blobs(self.bucket_name, prefix=base, delimiter="/")
        names = set()
        for page in pages.pages:
            names.update(p[len(base) :].rstrip("/") for p in page.prefixes)
        return sorted(names)

    def delete_file(self, relpath: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.bucket.blob(self._name(relpath)).delete()

    def delete_tree(self) -> None:
        from google.api_core.exceptions import NotFound

        base = f"{self.prefix}/" if self.prefix else ""
        for blob in self.client.list_blobs(self.bucket_name, prefix=base):
            with contextlib.suppress(NotFound):
                blob.delete()


class _HashingSink:
    """A write-only file object that hashes what is written to it (streams GCS downloads)."""

    def __init__(self):
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def _folder(url: str | Path) -> _LocalFolder | _GcsFolder:
    url = str(url)
    if url.startswith("gs://"):
        return _GcsFolder(url)
    if "://" in url:
        raise ValueError(f"unsupported dataset location {url!r}: use a local path or gs://bucket/prefix")
    return _LocalFolder(url)


def _write_durably(target: Path, text: str) -> None:
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _swap_lock(lock_path: Path, timeout_s: float = 2 * SWAP_LOCK_STALE_S) -> Iterator[None]:
    """Hold ``lock_path`` (created with O_EXCL) for a few milliseconds; break it if its owner is gone.

    Waits up to ``timeout_s``, longer than a lock takes to go stale, so an abandoned lock is always broken
    before waiters give up."""
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _break_if_abandoned(lock_path)
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not take {lock_path} within {timeout_s:.0f} s") from None
            time.sleep(0.005 + secrets.randbelow(10) / 1000)
            continue
        try:
            os.write(fd, owner.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if lock_path.read_text(encoding="utf-8") == owner:
                lock_path.unlink()


def _break_if_abandoned(lock_path: Path) -> None:
    """Remove a swap lock whose process is dead (same host) or that is older than ``SWAP_LOCK_STALE_S``."""
    try:
        observed = lock_path.read_text(encoding="utf-8")
        age = time.time() - lock_path.stat().st_mtime
    except FileNotFoundError:
        return
    if not (_owner_is_dead(observed) or age > SWAP_LOCK_STALE_S):
        return
    # Move it aside first (atomic), then make sure we moved the abandoned lock and not a fresh one.
    aside = lock_path.with_name(f"{lock_path.name}.broken.{secrets.token_hex(6)}")
    try:
        os.rename(lock_path, aside)
    except FileNotFoundError:
        return
    if aside.read_text(encoding="utf-8") != observed:
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock_path)
    aside.unlink()


def _owner_is_dead(lock_text: str) -> bool:
    try:
        owner = json.loads(lock_text)
    except json.JSONDecodeError:
        return False  # still being written, or garbage: only age can break it
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(owner["pid"]))


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


# --------------------------------------------------------------------------------------------------
# Versions, validation, LATEST
# --------------------------------------------------------------------------------------------------


def new_version_id() -> str:
    """A unique id that sorts by creation time: UTC timestamp to the microsecond + random suffix."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def _check_version_id(version_id: str) -> str:
    if not version_id or "/" in version_id or version_id.startswith(".") or version_id != version_id.strip():
        raise ValueError(f"bad version id {version_id!r}")
    return version_id


def version_url(root: str | Path, version_id: str) -> str:
    """Where version ``version_id`` of ``root`` lives (a local path or a gs:// URL)."""
    return _folder(root).child(f"{VERSIONS}/{_check_version_id(version_id)}").url


def list_versions(root: str | Path) -> list[str]:
    """Ids of every version folder under ``root``, oldest first (complete or not)."""
    return _folder(root).child(VERSIONS).subfolders()


def latest_version_id(root: str | Path) -> str | None:
    """The id ``ROOT/LATEST`` names, or None when nothing was ever published."""
    text, _ = _folder(root).read_pointer(LATEST)
    return text.strip() if text else None


def resolve_latest(root: str | Path) -> str | None:
    """The published version's location (read ``LATEST`` once, at start), or None if none was published."""
    version_id = latest_version_id(root)
    return None if version_id is None else version_url(root, version_id)


def validate_manifest(version: str | Path, *, verify_sha256: bool = True) -> dict:
    """Check a dataset version folder against its ``manifest.json``; return the parsed manifest.

    Checks: the manifest exists and parses, ``format_version`` is 1, the tables and failure files it
    names exist, and every file it records with a size (shards, ``table_files``, ``failure_files``)
    exists with that byte size and (when ``verify_sha256``) sha256. Sizes come from one listing per
    folder; hashing reads every such file. Deeper checks (tar sample counts, table row counts,
    reconciled counts) are ``videorec inspect``'s.

    Raises ``InvalidVersion`` listing every problem found.
    """
    folder = _folder(version)
    raw = folder.read_bytes(MANIFEST)
    if raw is None:
        raise InvalidVersion(folder.url, [f"{MANIFEST} is missing"])
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidVersion(folder.url, [f"{MANIFEST} is not JSON: {exc}"]) from None
    if not isinstance(manifest, dict):
        raise InvalidVersion(folder.url, [f"{MANIFEST} is not a JSON object"])
    problems = []
    if manifest.get("format_version") != 1:
        problems.append(f"format_version is {manifest.get('format_version')!r}, expected 1")
    files = _ManifestFiles(folder)
    named = list((manifest.get("tables") or {}).values()) + list(manifest.get("failures") or [])
    problems += [f"{path} is missing" for path in named if files.size(path) is None]
    recorded = [
        (f"{kind} shard", entry)
        for kind, shards in (manifest.get("shards") or {}).items()
        for entry in shards
    ]
    recorded += [("table", entry) for entry in (manifest.get("table_files") or {}).values()]
    recorded += [("failures file", entry) for entry in manifest.get("failure_files") or []]
    for what, entry in recorded:
        path = entry.get("path", "")
        size = files.size(path)
        if size is None:
            if path not in named:
                problems.append(f"{what} {path} is missing")
        elif size != entry.get("bytes"):
            problems.append(f"{what} {path} has {size} bytes, manifest says {entry.get('bytes')}")
        elif verify_sha256 and files.sha256(path) != entry.get("sha256"):
            problems.append(f"{what} {path} sha256 does not match the manifest")
    if problems:
        raise InvalidVersion(folder.url, problems)
    return manifest


class _ManifestFiles:
    """Sizes and hashes of the files a manifest names: in its folder, or ``../<version_id>/...`` in a
    sibling version (shards reused from an earlier version). One listing per folder."""

    def __init__(self, folder):
        self.folder = folder
        self._sizes: dict[str, dict[str, int]] = {}

    def _locate(self, path: str):
        path = posixpath.normpath(path)
        if path.startswith("../"):
            _, sibling, rest = path.split("/", 2)
            return sibling, self.folder.sibling(sibling), rest
        if path.startswith("/") or path == "..":
            raise ValueError(path)
        return "", self.folder, path

    def size(self, path: str) -> int | None:
        try:
            key, folder, rel = self._locate(path)
        except ValueError:
            return None
        if key not in self._sizes:
            self._sizes[key] = folder.sizes()
        return self._sizes[key].get(rel)

    def sha256(self, path: str) -> str:
        _, folder, rel = self._locate(path)
        return folder.sha256(rel)


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
        _require_lease(lease)
    folder = _folder(root)
    text, token = folder.read_pointer(LATEST)
    current = text.strip() if text else None
    if current != expected_previous:
        raise PublishConflict(
            f"{LATEST} of {folder.url} is {current!r}, this run started from {expected_previous!r}"
        )
    if not folder.swap_pointer(LATEST, f"{version_id}\n", token):
        raise PublishConflict(f"{LATEST} of {folder.url} changed while publishing {version_id}")


# --------------------------------------------------------------------------------------------------
# Run lease: one ingest run writes a root at a time
# --------------------------------------------------------------------------------------------------


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
    text, _ = _folder(root).read_pointer(RUN_LOCK)
    return RunLease.from_json(text) if text else None


def acquire_run_lease(root: str | Path, *, ttl_s: float = DEFAULT_LEASE_TTL_S) -> RunLease:
    """Take the root for one run: records a new version id and the current ``LATEST`` as its base.

    Takes over an expired lease (its run is presumed dead). Raises ``RootBusy`` when a live lease exists.
    """
    folder = _folder(root)
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
    _require_lease(lease)
    return _replace_lease(_folder(lease.root), lease, expires_at=time.time() + ttl_s)


def release_run_lease(lease: RunLease) -> bool:
    """Give the root back. Returns False (and changes nothing) if the lease was already lost."""
    folder = _folder(lease.root)
    text, token = folder.read_pointer(RUN_LOCK)
    if not text or RunLease.from_json(text).run_id != lease.run_id:
        return False
    return folder.swap_pointer(RUN_LOCK, None, token)


def _require_lease(lease: RunLease) -> None:
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


# --------------------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------------------


def prune(root: str | Path, *, keep: int) -> list[str]:
    """Delete old and abandoned versions; return the ids deleted.

    Kept: ``LATEST``, the ``keep - 1`` newest complete versions older than it, every version a live
    lease names (base or being written), and every version whose files a kept manifest points into
    (``../<id>/...`` paths, e.g. reused item shards). Everything else is deleted, including versions
    newer than ``LATEST`` left by runs that died or lost a race. Each deletion removes
    ``manifest.json`` first, so an interrupted prune leaves an incomplete version, never a corrupt one.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    folder = _folder(root)
    versions = list_versions(root)
    latest = latest_version_id(root)
    protected = set()
    lease = read_lease(root)
    if lease is not None and lease.expires_at > time.time():
        protected |= {lease.version_id, lease.base_version} - {None}
    if latest is not None:
        older_complete = [
            v
            for v in versions
            if v < latest and folder.child(f"{VERSIONS}/{v}").read_bytes(MANIFEST) is not None
        ]
        protected |= {latest, *older_complete[-(keep - 1) :]} if keep > 1 else {latest}
    protected |= _referenced_versions(folder, protected & set(versions))
    doomed = [v for v in versions if v not in protected]
    for version_id in doomed:
        version = folder.child(f"{VERSIONS}/{version_id}")
        version.delete_file(MANIFEST)
        version.delete_tree()
    return doomed


def _referenced_versions(folder, kept: set[str]) -> set[str]:
    """Versions that the manifests of ``kept`` versions point into with ``../<id>/`` paths."""
    referenced = set()
    for version_id in kept:
        raw = folder.child(f"{VERSIONS}/{version_id}").read_bytes(MANIFEST)
        if raw is None:
            continue
        manifest = json.loads(raw)
        for shards in (manifest.get("shards") or {}).values():
            for shard in shards:
                parts = shard.get("path", "").split("/")
                if len(parts) > 2 and parts[0] == "..":
                    referenced.add(parts[1])
    return referenced
