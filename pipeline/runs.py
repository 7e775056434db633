"""Run orchestration: checks before the job, where it writes, gates, and what happens after it.

``pipeline.main`` builds and runs the job; these functions wrap it:

- :func:`run_on_output` (``--output``): the job writes a staging folder beside the output; only a
  dataset that passes the gates (:mod:`pipeline.gates`) is swapped into place, replacing the old
  one whole (``--overwrite``). A failed, refused or interrupted run deletes its staging folder.
- :func:`run_on_root` (``--dataset-root``): take the root's lease (renewed while the job runs), write
  a new version, check the gates, publish it as ``LATEST``, release, prune. A failed, refused or
  interrupted run deletes its version and releases the root.
- :func:`launch_on_output` / :func:`launch_on_root`: the same checks, for a launcher that submits the
  job and exits; the job's last step (:func:`publish_version`) checks the gates and publishes.

Ctrl-C (SIGINT) and SIGTERM during a run clean up as above, then raise :class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from pipeline import job_watchdog, ownership, versions
from pipeline.gates import GateTripped, check_gates, gate_problems
from pipeline.options import IngestConfig
from pipeline.preflight import check_inputs
from pipeline.versions.folders import process_is_dead
from transforms import storage
from transforms.format import MANIFEST_FILE
from transforms.manifest import read_manifest
from transforms.reconcile import remove_leftovers_after_job
from transforms.reuse import ReuseFrom

STAGING = ".staging-"
"""Infix of a local run's staging folder: ``PARENT/.NAME.staging-<host>-<pid>-<random>``."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (what schedulers send); handled like Ctrl-C."""


class SignalWatch:
    """Which of SIGINT / SIGTERM arrived while inside :func:`interrupts_raise` (``received``), and the
    processes that already ran under this one when it started (``children_before``)."""

    def __init__(self):
        self.received: str | None = None
        self.children_before = descendants(os.getpid())

    def stop_job_processes(self) -> None:
        """Kill the processes started under this one since (Beam workers, sampler workers), so none
        writes into a folder the clean-up deletes; waits up to 5 s for them to go."""
        doomed: set[int] = set()
        while new := descendants(os.getpid()) - self.children_before - doomed:
            for pid in new:  # freeze first, so none reacts to another's death or starts a new one
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGSTOP)
            doomed |= new
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while doomed and time.monotonic() < deadline:
            doomed = {pid for pid in doomed if not process_is_dead(pid)}
            time.sleep(0.02)


def descendants(pid: int) -> set[int]:
    """Every process under ``pid`` (children, grandchildren...), from ``/proc``; empty where there is none."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class Interrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM and cleaned up; ``exit_status`` is 130 or 143."""

    def __init__(self, signal_name: str, cleaned: str):
        self.exit_status = 128 + int(getattr(signal, signal_name))
        super().__init__(f"interrupted by {signal_name}; {cleaned}")


@contextlib.contextmanager
def interrupts_raise() -> Iterator[SignalWatch]:
    """While inside, the first SIGINT or SIGTERM raises ``KeyboardInterrupt`` (:class:`Terminated`) in
    the main thread, so clean-up code runs; later ones are only noted, so clean-up is not cut short.

    Beam re-raises an interrupt that lands inside a transform as a ``RuntimeError``; the yielded
    :class:`SignalWatch` still says which signal it was.
    """
    watch = SignalWatch()

    def handle(signum, frame):
        first = watch.received is None
        watch.received = watch.received or signal.Signals(signum).name
        if first:
            # Beam logs the interrupt it re-raises, and the workers' broken pipes, as errors with
            # tracebacks: noise after a Ctrl-C.
            for name in [n for n in logging.root.manager.loggerDict if n.startswith("apache_beam")]:
                logging.getLogger(name).setLevel(logging.CRITICAL)
            logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
            # The runner's threads then fail talking to the workers stopped below: expected, not shown.
            threading.excepthook = lambda args: None
            job_watchdog.stand_down()  # the workers stopped below are not a failure to act on
            watch.stop_job_processes()
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    try:
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield watch
        return
    try:
        yield watch
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def announce(config: IngestConfig, quiet: bool) -> None:
    """The run's first progress line, printed before any input is read."""
    if not quiet:
        target = config.output or f"{config.dataset_root} (new version)"
        print(f"ingest: checking inputs and {target}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- --output


def run_on_output(config: IngestConfig, run_job, quiet: bool):
    """Check inputs, run ``run_job(staged_config)`` into a staging folder, gate, swap into ``--output``.

    ``run_job`` returns an ``IngestResult``; the result returned names the final folder. On ``gs://``
    there is no rename: the job writes the output prefix directly (with ``--overwrite`` the old
    objects are deleted first, manifest first, so no old manifest ever sits beside new shards).

    A local ``--output`` is locked for the whole run (``ownership.output_lock``), and a ``--work-dir``
    keeps only what was there before (``ownership.own_work_dir``).

    Raises:
        preflight.BadInput: before the job, when an input or the output cannot be used.
        ownership.OutputBusy: another live run writes the same ``--output`` (exit 3).
        GateTripped: the dataset failed a gate; the output is left as it was (local) or empty (gs://).
        Interrupted: Ctrl-C or SIGTERM; the staging folder is gone, the output as it was.
    """
    announce(config, quiet)
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
    if storage.exists(manifest):
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


# ---------------------------------------------------------------------------------------------- --dataset-root


def publish_version(_, lease_json: str, keep: int | None, max_dropped_fraction: float) -> list[str]:
    """The job's last step when it was launched without waiting: gates, then ``versions.finish_run``.

    Publishes the version the lease names as ``LATEST``, releases the root and prunes to ``keep``
    versions; returns the pruned version ids. A version that trips a gate is deleted and the root
    released (``GateTripped`` fails the job). A retried step that finds its version already
    published only releases the lease.
    """
    lease = versions.RunLease.from_json(lease_json)
    if versions.latest_version_id(lease.root) == lease.version_id:
        versions.release_run_lease(lease)
        return []
    problems = gate_problems(
        read_manifest(versions.version_url(lease.root, lease.version_id))["counts"], max_dropped_fraction
    )
    if problems:
        versions.abandon_run(lease)
        raise GateTripped(problems)
    return versions.finish_run(lease, keep=keep)


def version_to_write(config: IngestConfig, lease: versions.RunLease) -> tuple[IngestConfig, ReuseFrom | None]:
    """The config writing the lease's version folder, and (with videos) the version to reuse frames from."""
    root = config.dataset_root
    versioned = replace(
        config, output=versions.version_url(root, lease.version_id), dataset_version=lease.version_id
    )
    if not config.has_videos:
        return versioned, None
    return versioned, ReuseFrom(lease.base_version and versions.version_url(root, lease.base_version))


def run_on_root(config: IngestConfig, run_job, quiet: bool):
    """Check inputs, take the root's lease, run ``run_job(config, reuse)`` for a new version, gate,
    publish it and prune.

    The lease is renewed while the job runs (``versions.LeaseKeeper``). A failed, refused
    (``GateTripped``) or interrupted (``Interrupted``) run deletes its version and releases the
    root; ``LATEST`` stays as it was.
    """
    announce(config, quiet)
    with ownership.own_work_dir(config):
        check_inputs(config)
        return _run_version(config, run_job, quiet)


def _run_version(config: IngestConfig, run_job, quiet: bool):
    lease = versions.acquire_run_lease(config.dataset_root, ttl_s=config.lease_ttl_s, held_by_process=True)
    keeper = versions.LeaseKeeper(lease, config.lease_ttl_s)
    with interrupts_raise() as signals:
        try:
            with keeper, job_watchdog.cleanup_if_aborted(lambda: versions.abandon_run(keeper.lease)):
                versioned, reuse = version_to_write(config, lease)
                result = run_job(versioned, reuse)
            check_gates(result.manifest, config.max_dropped_fraction)
            remove_unlisted_files(versioned.output, result.manifest, quiet)
        except BaseException:
            versions.abandon_run(keeper.lease)
            if signals.received:
                cleaned = f"removed unpublished version {lease.version_id} and released the root"
                raise Interrupted(signals.received, cleaned) from None
            raise
    lease = keeper.lease
    pruned = versions.finish_run(lease, keep=config.keep)
    if not quiet:
        print(f"ingest: published {lease.version_id} as {config.dataset_root}/LATEST", file=sys.stderr)
        if pruned:
            print(f"ingest: pruned {len(pruned)} version(s): {', '.join(pruned)}", file=sys.stderr)
    return result


def launch_on_root(config: IngestConfig, start_job):
    """Check inputs, take the root's lease and submit ``start_job(config, reuse, lease)``, whose last
    step gates and publishes. The launcher exits after submitting, so the lease is not renewed."""
    check_inputs(config)
    lease = versions.acquire_run_lease(config.dataset_root, ttl_s=config.lease_ttl_s)
    try:
        versioned, reuse = version_to_write(config, lease)
        return start_job(versioned, reuse, lease)
    except BaseException:
        versions.release_run_lease(lease)
        raise
