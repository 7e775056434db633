"""A local job that has failed ends within a deadline: it never hangs after an error.

Why Beam's local runner hangs after a failure (reproduced on Beam 2.78 with the code before this
module, an ID-only ingest of 12 users, one run in three): one bundle fails in the runner while
reading a worker's output (there: ``GroupingBuffer`` got an argument it did not know), so the
runner stops reading that output and the other workers' outputs. A worker still producing output
then blocks on its full send queue, never finishes its bundle and never exits; Beam's shutdown
(``close_all`` -> ``stop_worker``) waits for that process without a timeout. The same happens when
a worker exits before it connects (the runner waits for it for ever), and Beam's shutdown can also
block on a bounded queue nobody drains once a worker is gone.

So the code that sees a failure first (a bundle of the runner, a sender thread, a worker process
that exited; :mod:`pipeline.runner_buffers`, :mod:`pipeline.local_runner`) calls
:func:`report_failure`. The watchdog then at once runs the failure hooks (the runner buffers start
draining every data-plane queue of the job, so no thread of the runner or a worker stays blocked on
one), after :data:`STOP_AFTER_S` stops the job's processes if the job is still running (a worker
busy in a long DoFn), and after :data:`GRACE_S` prints the error, runs the clean-ups the run
registered (:func:`cleanup_if_aborted`: delete the unfinished output, give the dataset root back)
and ends the process with exit status 1. Nothing is published: publishing happens only after the
job returned. The first failure is the one reported (:meth:`JobWatchdog.first_error`), not a later
consequence of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

STOP_AFTER_S = 5.0
GRACE_S = 20.0
# A worker process that exited: Beam's runner never recovers, so the job ends sooner.
WORKER_EXIT_GRACE_S = 8.0
ABORT_EXIT = 1

_active: JobWatchdog | None = None
_cleanups: list[Callable[[], None]] = []
_failure_hooks: list[Callable[[Callable[[], bool]], None]] = []


class JobWatchdog:
    """Reacts to the first reported failure of a local job (see the module docstring)."""

    def __init__(self, stop_processes: Callable[[], None], grace_s: float = GRACE_S):
        self.grace_s = grace_s
        self.stop_processes = stop_processes
        self.first_failure: str | None = None
        self.first_error: BaseException | None = None
        self._ended = threading.Event()
        self._lock = threading.Lock()

    def failed(self, message: str, error: BaseException | None = None, grace_s: float | None = None) -> None:
        with self._lock:
            if self.first_failure is not None or self._ended.is_set():
                return
            self.first_failure, self.first_error = message, error
            if grace_s is not None:
                self.grace_s = grace_s
        for hook in list(_failure_hooks):
            with contextlib.suppress(Exception):
                hook(self._ended.is_set)
        threading.Thread(target=self._expire, name="videorec-job-watchdog", daemon=True).start()

    def ended(self) -> None:
        self._ended.set()

    def _expire(self) -> None:
        if self._ended.wait(min(STOP_AFTER_S, self.grace_s)):
            return
        with contextlib.suppress(BaseException):
            self.stop_processes()
        if self._ended.wait(max(self.grace_s - STOP_AFTER_S, 0)):
            return
        print(
            f"videorec ingest: error: {self.first_failure}; the local runner did not stop within "
            f"{self.grace_s:g} s after it, so the run ends here (nothing was published)",
            file=sys.stderr,
            flush=True,
        )
        for cleanup in reversed(list(_cleanups)):
            with contextlib.suppress(BaseException):
                cleanup()
        os._exit(ABORT_EXIT)


def report_failure(message: str, error: BaseException | None = None, grace_s: float | None = None) -> None:
    """Tell the running local job's watchdog that something failed; nothing happens outside a local job.

    ``grace_s`` shortens the deadline for a failure nothing in Beam recovers from (a dead worker).
    """
    watchdog = _active
    if watchdog is not None:
        watchdog.failed(message, error, grace_s)


def stand_down() -> None:
    """The run is being stopped on purpose (Ctrl-C, SIGTERM) and cleans up itself: no watchdog action."""
    watchdog = _active
    if watchdog is not None:
        watchdog.ended()


def on_failure(hook: Callable[[Callable[[], bool]], None]) -> Callable[[], None]:
    """Run ``hook(job_ended)`` at a local job's first failure (it must not block); returns the undo."""
    _failure_hooks.append(hook)
    return lambda: _failure_hooks.remove(hook)


@contextlib.contextmanager
def watching(stop_processes: Callable[[], None], grace_s: float = GRACE_S) -> Iterator[JobWatchdog]:
    """While inside, failures reported with :func:`report_failure` start the watchdog.

    An exception leaving the block is replaced by the first failure reported, when that was another
    one (Beam raises the error of the first bundle in order, which may be a consequence).
    """
    global _active
    watchdog = JobWatchdog(stop_processes, grace_s)
    previous, _active = _active, watchdog
    try:
        yield watchdog
    except Exception as error:
        first = watchdog.first_error
        if first is not None and first is not error and first not in _causes(error):
            raise first from error
        raise
    finally:
        watchdog.ended()
        _active = previous


def _causes(error: BaseException) -> list[BaseException]:
    chain, seen = [], error
    while seen is not None and len(chain) < 20:
        seen = seen.__cause__ or seen.__context__
        if seen is not None:
            chain.append(seen)
    return chain


@contextlib.contextmanager
def cleanup_if_aborted(cleanup: Callable[[], None]) -> Iterator[None]:
    """While inside, a watchdog that ends the process runs ``cleanup`` first (best effort)."""
    _cleanups.append(cleanup)
    try:
        yield
    finally:
        _cleanups.remove(cleanup)
