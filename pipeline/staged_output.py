"""``--output`` runs: the job writes a staging folder, and only a dataset that passes the gates is
swapped into place.

- :func:`run_on_output`: the job writes a staging folder beside the output; only a dataset that
  passes the gates (:mod:`pipeline.gates`) is swapped into place, replacing the old one whole
  (``--overwrite``). A failed, refused or interrupted run deletes its staging folder.
- :func:`launch_on_output`: the same checks, for a launcher that submits the job and exits.

Ctrl-C (SIGINT) and SIGTERM during a run clean up as above, then raise
:class:`pipeline.interrupts.Interrupted`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
import shutil
import socket
import sys
from dataclasses import replace
from pathlib import Path

from dataformat.format import MANIFEST_FILE
from pipeline import job_watchdog, ownership
from pipeline.gates import check_gates
from pipeline.interrupts import Interrupted, interrupts_raise
from pipeline.options import IngestConfig
from pipeline.preflight import check_gcs_access, check_inputs
from pipeline.versions.folders import process_is_dead
from transforms import storage
from transforms.reconcile import remove_leftovers_after_job

STAGING = ".staging-"
"""Infix of a local run's staging folder: ``PARENT/.NAME.staging-<host>-<pid>-<random>``."""


def announce(config: IngestConfig, quiet: bool) -> None:
    """The run's first progress line, printed before any input is read."""
    if not quiet:
        target = config.output or f"{config.dataset_root} (new version)"
        print(f"ingest: checking inputs and {target}", file=sys.stderr, flush=True)


def run_on_output(config: IngestConfig, run_job, quiet: bool):
    """Check inputs, run ``run_job(staged_config)`` into a staging folder, gate, swap into ``--output``.

    ``run_job`` returns an ``IngestResult``; the result returned names the final folder. On ``gs://``
    there is no rename: the job writes the output prefix directly (with ``--overwrite`` the old
    objects are deleted first, manifest first, so no old manifest ever sits beside new shards).

    ``--output`` is locked for the whole run (``ownership.output_lock``: a ``flock`` locally, a lease
    object on ``gs://``, whose bucket is checked first so an unreachable one is refused in seconds),
    and a ``--work-dir`` keeps only what was there before (``ownership.own_work_dir``).

    Raises:
        preflight.BadInput: before the job, when an input or the output cannot be used.
        ownership.OutputBusy: another live run writes the same ``--output`` (exit 3).
        GateTripped: the dataset failed a gate; the output is left as it was (local) or empty (gs://).
        Interrupted: Ctrl-C or SIGTERM; the staging folder is gone, the output as it was.
    """
    announce(config, quiet)
    if storage.is_remote(config.output):
        check_gcs_access(config.output)  # bounded; the lease's own writes retry for minutes
    with ownership.output_lock(config.output), ownership.own_work_dir(config):
        check_inputs(config)
        return _run_into_staging(config, run_job, quiet)


def _run_into_staging(config: IngestConfig, run_job, quiet: bool):
    final = config.output
    if storage.is_remote(final):
        _delete_dataset(final)
        staging = final
    else:
        _remove_abandoned_staging(final)
        staging = _staging_folder(final)
    with interrupts_raise() as signals:
        try:
            with job_watchdog.cleanup_if_aborted(lambda: _delete_dataset(staging)):
                result = run_job(replace(config, output=staging))
            check_gates(result.manifest, config.max_dropped_fraction)
            remove_unlisted_files(staging, result.manifest, quiet)
        except BaseException:
            _delete_dataset(staging)
            if signals.received:
                raise Interrupted(signals.received, f"removed the unfinished output {staging}") from None
            raise
        if staging != final:
            swap_into_place(staging, final, quiet)
    return replace(result, output=final)


def launch_on_output(config: IngestConfig, start_job):
    """Check inputs and submit ``start_job(config)`` writing ``--output`` directly (the launcher exits)."""
    check_inputs(config)
    if config.overwrite:
        _delete_dataset(config.output)
    return start_job(config)


def _staging_folder(final: str) -> str:
    path = Path(final).absolute()
    token = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return str(path.parent / f".{path.name}{STAGING}{token}")


def _remove_abandoned_staging(final: str) -> None:
    """Delete staging folders of ``final`` left by killed runs of this host (their process is gone)."""
    path = Path(final).absolute()
    if not path.parent.is_dir():
        return
    host = socket.gethostname()
    for folder in path.parent.glob(f".{path.name}{STAGING}*"):
        owner = folder.name.rsplit(STAGING, 1)[1].rsplit("-", 2)
        dead = len(owner) == 3 and owner[0] == host and owner[1].isdigit()
        if dead and process_is_dead(int(owner[1])):
            shutil.rmtree(folder, ignore_errors=True)


def remove_unlisted_files(folder: str, manifest: dict, quiet: bool) -> int:
    """Before publishing a local dataset folder: remove what the finished job left beside the files
    its manifest names (a killed attempt's temporary copy of a listed file, a straggler's scratch
    file in ``_work/``, emptied folders), count them in ``run_stats.json`` and say so; returns the
    count. Any other file raises ``ReconciliationError`` and nothing is published
    (``transforms.reconcile``; the job itself checked its data folders before writing the manifest).
    """
    if storage.is_remote(folder):
        return 0
    removed = remove_leftovers_after_job(folder, manifest, scratch="_work")
    if removed and not quiet:
        print(f"ingest: removed {len(removed)} leftover file(s) beside the dataset", file=sys.stderr)
    return len(removed)


def _delete_files_except(base: Path, keep: set[str]) -> int:
    """Delete every file under ``base`` whose relative path is not in ``keep``, then the folders left
    empty (not ``base``); returns how many files were deleted."""
    doomed = [p for p in base.rglob("*") if not p.is_dir() and p.relative_to(base).as_posix() not in keep]
    for path in doomed:
        path.unlink()
    for path in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(path.iterdir()):
            path.rmdir()
    return len(doomed)


def _delete_dataset(folder: str) -> None:
    """Delete a dataset folder (local or ``gs://``), its manifest first so it never looks complete."""
    manifest = storage.join(folder, MANIFEST_FILE)
    if storage.path_exists(manifest):
        from apache_beam.io.filesystems import FileSystems

        FileSystems.delete([manifest])
    storage.delete_tree(folder)


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def swap_into_place(staging: str, final: str, quiet: bool = True) -> None:
    """Make the complete dataset at ``staging`` the folder ``final``, removing what ``final`` held.

    An existing ``final`` is exchanged with ``staging`` in one atomic rename where the OS supports it
    (Linux), else moved aside first; readers see the old dataset or the new one, never a mix. Of the
    old content only the dataset's own files are deleted (``ownership.foreign_files``): a file put
    there while the job ran is kept, in ``FINAL.kept-<token>``, and named on stderr.
    """
    if not os.path.exists(final):
        os.rename(staging, final)
        return
    if _exchange(staging, final):
        old = staging
    else:
        old = f"{staging}.old"
        os.rename(final, old)
        os.rename(staging, final)
    _, foreign = ownership.foreign_files(old)
    if not foreign:
        _delete_dataset(old)
        return
    kept = f"{final}.kept-{secrets.token_hex(4)}"
    os.rename(old, kept)
    _delete_files_except(Path(kept), set(foreign))
    print(
        f"ingest: the old {final} held files ingest did not write; they are kept in {kept}", file=sys.stderr
    )
