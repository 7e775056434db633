"""A dataset root's storage: a local folder or a GCS prefix, with compare-and-swap on small pointer files.

Every change to a pointer file (``LATEST``, ``RUN.lock``) is a compare-and-swap:

- on GCS, an upload or delete with ``if_generation_match`` set to the generation the caller read
  (0: "must not exist"), so the service rejects the write when anyone changed the object since;
- on a local path, the read-compare-write runs while holding ``ROOT/.swap.lock``, a file created with
  ``O_CREAT | O_EXCL`` (only one process can create it), and the new content is written to a temporary
  file, fsync'ed and moved over the old one with ``os.replace`` (readers see the old or the new line,
  never a partial one). A lock left by a killed process is broken when its process is gone (same
  host) or, for a lock of another host's process (or one still unwritten), when it is older than
  ``SWAP_LOCK_STALE_S``. A live process on this host keeps its lock however old the file looks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from blobstore.gcs import gcs_client, split_gcs_url
from pipeline.versions.errors import VersionError

SWAP_LOCK = ".swap.lock"

SWAP_LOCK_STALE_S = 60.0
"""A swap lock this old is abandoned: the critical section it guards takes milliseconds."""


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


def folder_at(url: str | Path) -> _LocalFolder | _GcsFolder:
    """The folder at ``url``: a local path or ``gs://bucket/prefix``.

    Raises:
        ValueError: another scheme.
    """
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
    """Remove a swap lock whose process is dead (same host) or, unless its process lives on this host, that is
    older than ``SWAP_LOCK_STALE_S``.

    Breakers take turns (an ``flock`` on the folder, dropped by the kernel if a breaker dies) and look at the
    lock again in their turn: a lock whose owner is dead changes only by being broken, so the lock removed is
    the abandoned one they saw, never a fresh one another process created after an earlier breaker."""
    seen = _observe(lock_path)
    if seen is None or not _is_abandoned(*seen):
        return
    with _breakers_take_turns(lock_path.parent):
        again = _observe(lock_path)
        if again is None or again[0] != seen[0]:  # already broken, or released and taken again
            return
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()


def _observe(lock_path: Path) -> tuple[str, float] | None:
    """(text, age in seconds) of the lock, or None when there is none."""
    try:
        return lock_path.read_text(encoding="utf-8"), time.time() - lock_path.stat().st_mtime
    except FileNotFoundError:
        return None


def _is_abandoned(text: str, age_s: float) -> bool:
    if _owner_is_alive_here(text):
        return False
    return _owner_is_dead(text) or age_s > SWAP_LOCK_STALE_S


@contextlib.contextmanager
def _breakers_take_turns(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _owner_is_alive_here(lock_text: str) -> bool:
    """True when the lock's owner is a live process on this host: its lock is never broken, however old
    its file looks (a wall clock that jumps forward must not hand the lock to a second process)."""
    try:
        owner = json.loads(lock_text)
    except json.JSONDecodeError:
        return False
    return owner.get("host") == socket.gethostname() and not process_is_dead(int(owner["pid"]))


def _owner_is_dead(lock_text: str) -> bool:
    try:
        owner = json.loads(lock_text)
    except json.JSONDecodeError:
        return False  # still being written, or garbage: only age can break it
    if owner.get("host") != socket.gethostname():
        return False
    return process_is_dead(int(owner["pid"]))


def process_is_dead(pid: int) -> bool:
    """True when no process ``pid`` runs on this host (or only its zombie is left)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"
