"""What ``videorec ingest`` may write over or delete, and one run per ``--output`` at a time.

The project deletes only what it wrote:

- a dataset folder it recognises (:func:`foreign_files` finds nothing): ``manifest.json`` written by
  ``videorec-pipeline``, and every other file one the manifest lists or one with a name the project
  gives its files (an older run's shard, an atomic write's ``.tmp-`` file, ``_work/``);
- its scratch folder: ``OUTPUT/_work``, or ``WORK_DIR/fragments`` under a ``--work-dir`` that was
  empty or new (:func:`scratch_folder`), and the work folder itself only when the run created it;
- staging folders of its own name pattern (``pipeline.staged_output``).

``--output`` is refused before the job when it is a symbolic link, a mount point (the finished
dataset is swapped in by a rename, which a mount point cannot take), or holds an input; an existing
folder is replaced (``--overwrite``) only when it is a dataset as above. :func:`output_lock` makes
two runs to one ``--output`` exclude each other (a local ``flock``; on ``gs://`` an atomically created
lease object, ``pipeline.output_lease``): the second exits 3 naming the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from dataformat.format import MANIFEST_FILE, RUN_STATS_FILE
from dataformat.manifest import read_manifest
from pipeline.options import IngestConfig
from pipeline.output_lease import LOCK_SUFFIX, OutputBusy, output_lease
from transforms import storage
from transforms.item_shards import FRAGMENTS_DIR

DEFAULT_WORK = "_work"
"""The scratch folder inside the output when no ``--work-dir`` is given."""

CREATED_BY = "videorec-pipeline"

# Names the project gives the files of a dataset folder (relative paths), besides what a manifest lists.
_OWN_NAMES = re.compile(
    r"^(manifest\.json|run_stats\.json|items/items-\d{6}\.tar|train/train-\d{6}\.tar(\.gz)?"
    r"|tables/(items|sequences)/part-\d{5}\.parquet|failures/part-\d{5}\.jsonl|_work/.*)"
    r"(\.tmp-\d+-\d+)?$"
)


class NotOurs(ValueError):
    """A folder the run would write over or delete holds what the project did not write (exit 2)."""


def _refuse(message: str) -> Exception:
    return NotOurs(" ".join(message.split()))


# ---------------------------------------------------------------------------------------------- datasets


def owned_paths(manifest: dict) -> set[str]:
    """Paths (relative to the dataset folder) of every file a manifest names, plus itself and run stats."""
    listed = {MANIFEST_FILE, RUN_STATS_FILE}
    for key in ("failures",):
        value = manifest.get(key) or []
        listed |= {value} if isinstance(value, str) else {p for p in value if isinstance(p, str)}
    for paths in (manifest.get("tables") or {}).values() if isinstance(manifest.get("tables"), dict) else []:
        listed |= {paths} if isinstance(paths, str) else {p for p in paths if isinstance(p, str)}
    shards = manifest.get("shards") if isinstance(manifest.get("shards"), dict) else {}
    for kind in shards.values():
        listed |= {s["path"] for s in kind or [] if isinstance(s, dict) and isinstance(s.get("path"), str)}
    return listed


def read_own_manifest(folder: str) -> dict | None:
    """The manifest of ``folder`` when it is one the project wrote (JSON object, ``created_by`` ours)."""
    try:
        manifest = read_manifest(folder, storage.read_whole_file, checked=False)
    except (OSError, ValueError):
        return None
    except Exception:  # noqa: BLE001 - Beam's FileSystems raises its own errors for a missing object
        return None
    if not isinstance(manifest, dict) or not str(manifest.get("created_by", "")).startswith(CREATED_BY):
        return None
    return manifest


def _files_under(folder: str) -> list[str]:
    """Relative paths of every file under ``folder`` (local or ``gs://``)."""
    if storage.is_remote(folder):
        base = folder.rstrip("/") + "/"
        return [path[len(base) :] for path in storage.match(base)]
    root = Path(folder)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def foreign_files(folder: str) -> tuple[str, list[str]]:
    """``("", [])`` when ``folder`` is a dataset the project wrote; else what makes it not one and the
    files that are not the project's (``(reason, paths)``)."""
    manifest = read_own_manifest(folder)
    if manifest is None:
        files = _files_under(folder)
        return "holds no manifest.json written by videorec ingest, so it is not a dataset", files
    listed = owned_paths(manifest)
    foreign = [path for path in _files_under(folder) if path not in listed and not _OWN_NAMES.match(path)]
    if foreign:
        return "holds files that videorec ingest did not write", foreign
    return "", []


# ---------------------------------------------------------------------------------------------- --output


def input_locations(config: IngestConfig) -> list[str]:
    """The local paths of every input: interaction files (the folder of a glob), videos, map, titles."""
    found = []
    for part in config.interactions.split(","):
        part = part.strip()
        if part and not storage.is_remote(part):
            fixed = re.split(r"[*?\[]", part, maxsplit=1)
            found.append(fixed[0] if len(fixed) == 1 else os.path.dirname(fixed[0]) or ".")
    for path in (config.videos, config.video_map, config.titles):
        if path and not storage.is_remote(path):
            found.append(path)
    if config.video_map and not storage.is_remote(config.video_map):
        found.append(os.path.dirname(os.path.abspath(config.video_map)))  # the map's videos live there
    return found


def _is_within(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or lies under it, by resolved (real) paths."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_is_ours(config: IngestConfig, flag: str = "--output") -> None:
    """``--output`` may take a new dataset: not a link, not a mount point, holding no input, and new,
    empty, or a dataset the project wrote (replaced only with ``--overwrite``).

    Raises:
        NotOurs: otherwise; nothing was written.
    """
    output = config.output
    if storage.is_remote(output):
        if holds_objects(output):
            _check_replaceable(output, config.overwrite, flag)
        return
    if os.path.islink(output):
        raise _refuse(
            f"{flag} {output} is a symbolic link; give the folder it points to ({os.path.realpath(output)}) "
            "or a new folder"
        )
    if os.path.ismount(os.path.abspath(output)):
        raise _refuse(
            f"{flag} {output} is a mount point, and the finished dataset is moved into place by renaming "
            f"a folder beside it, which a mount point cannot take; give a folder inside it, e.g. "
            f"{os.path.join(output, 'dataset')}"
        )
    held = [path for path in input_locations(config) if _is_within(path, output)]
    if held:
        raise _refuse(
            f"{flag} {output} holds the input {held[0]}; ingest never writes over its inputs: "
            f"choose another {flag}"
        )
    if os.path.isdir(output) and os.listdir(output):
        _check_replaceable(output, config.overwrite, flag)


def _check_replaceable(output: str, overwrite: bool, flag: str) -> None:
    reason, foreign = foreign_files(output)
    if reason:
        example = f" (e.g. {foreign[0]})" if foreign else ""
        raise _refuse(
            f"{flag} {output} already exists and {reason}{example}; --overwrite replaces only a dataset "
            f"written by videorec ingest: choose another {flag}, or move those files"
        )
    if not overwrite:
        raise _refuse(
            f"{flag} {output} already exists and is not empty; pass --overwrite to replace it, "
            f"or choose another {flag}"
        )


def holds_objects(url: str) -> bool:
    """True when at least one object lies under the ``gs://`` prefix ``url`` (one listing of one object)."""
    from blobstore import gcs

    bucket, prefix = gcs.split_gcs_url(url)
    blobs = gcs.gcs_client().list_blobs(bucket, prefix=f"{prefix}/" if prefix else "", max_results=1)
    return next(iter(blobs), None) is not None


# ---------------------------------------------------------------------------------------------- --work-dir


def check_work_dir(work_dir: str) -> None:
    """``--work-dir`` must be new or empty: the run deletes what it writes there, so it takes no folder
    that holds anything else.

    Raises:
        NotOurs: the folder holds files, or is a file.
    """
    if storage.is_remote(work_dir):
        busy = holds_objects(work_dir)
    elif os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise _refuse(f"--work-dir {work_dir} is a file; give a new or empty folder")
    else:
        busy = os.path.isdir(work_dir) and bool(os.listdir(work_dir))
    if busy:
        raise _refuse(
            f"--work-dir {work_dir} is not empty; give a new or empty folder (the run deletes what it "
            "writes there, and nothing else)"
        )


def scratch_folder(config: IngestConfig) -> str:
    """The folder the run writes its frame fragments under and deletes at the end: ``OUTPUT/_work``, or
    ``WORK_DIR/fragments`` (never ``--work-dir`` itself)."""
    if config.work_dir is None:
        return storage.join(config.output, DEFAULT_WORK)
    return storage.join(config.work_dir, FRAGMENTS_DIR)


def work_root(config: IngestConfig) -> str:
    """Where ``transforms.item_shards`` puts ``fragments/``: ``OUTPUT/_work`` or ``--work-dir``."""
    return config.work_dir or storage.join(config.output, DEFAULT_WORK)


@contextlib.contextmanager
def own_work_dir(config: IngestConfig) -> Iterator[None]:
    """Around a run: afterwards (however it ends) delete ``WORK_DIR/fragments``, and ``--work-dir``
    itself when this run created it and it is empty."""
    work_dir = config.work_dir
    if work_dir is None or storage.is_remote(work_dir):
        yield
        return
    created = not os.path.exists(work_dir)
    try:
        yield
    finally:
        storage.delete_tree(scratch_folder(config))
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(work_dir)


# ---------------------------------------------------------------------------------------------- one writer


def lock_path(output: str) -> str:
    path = Path(output).absolute()
    return str(path.parent / f".{path.name}{LOCK_SUFFIX}")


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[None]:
    """Hold ``PARENT/.NAME.ingest.lock`` (an exclusive ``flock``) while the run writes ``output``.

    The kernel drops the lock when its process dies, so a killed run never blocks the next one. The
    file names its holder; the holder removes it when done. A ``gs://`` output is held by a lease
    object beside it instead (``pipeline.output_lease``).

    Raises:
        OutputBusy: another live process holds it (its ``host:pid`` and start time in the message).
    """
    if storage.is_remote(output):
        with output_lease(output):
            yield
        return
    path = lock_path(output)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = _take(path, output)
    except OSError:  # an unwritable parent: the checks before the job say so in one line
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _take(path: str, output: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another run"
            os.close(fd)
            raise OutputBusy(
                f"--output {output} is being written by run {holder}; wait for it to finish, "
                "or choose another --output"
            ) from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and current.st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: take the new one
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()}:{os.getpid()} (started {started})\n".encode())
    return fd
