"""A local job that has failed ends within a deadline: it never hangs after an error.

Beam's local runner can block for ever after a failure: its shutdown puts a last message on a
bounded queue that nobody drains once a worker has died, and it waits without a timeout for a
worker that exited before it connected. The code that sees a failure first (a bundle of the runner,
a worker process that exited, a sender thread; :mod:`pipeline.runner_buffers`,
:mod:`pipeline.local_runner`) calls :func:`report_failure`. If the job has not ended
:data:`GRACE_S` seconds later, the watchdog prints the error, stops the job's processes, runs the
clean-ups the run registered (:func:`cleanup_if_aborted`: delete the unfinished output, give the
dataset root back) and ends the process with exit status 1. Nothing is published: publishing happens
only after the job returned.

The normal path does not need it: a failure propagates as an exception and the run cleans up as
usual. Only local runs have a watchdog (:func:`watching`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

GRACE_S = 20.0
ABORT_EXIT = 1

_active: JobWatchdog | None = None
_cleanups: list[Callable[[], None]] = []


class JobWatchdog:
    """Ends the process ``grace_s`` after the first reported failure unless :meth:`ended` came first."""

    def __init__(self, grace_s: float, stop_processes: Callable[[], None]):
        self.grace_s = grace_s
        self.stop_processes = stop_processes
        self.first_failure: str | None = None
        self._ended = threading.Event()
        self._lock = threading.Lock()

    def failed(self, message: str) -> None:
        with self._lock:
            if self.first_failure is not None or self._ended.is_set():
                return
            self.first_failure = message
        threading.Thread(target=self._expire, name="videorec-job-watchdog", daemon=True).start()

    def ended(self) -> None:
        self._ended.set()

    def _expire(self) -> None:
        if self._ended.wait(self.grace_s):
            return
        print(
            f"videorec ingest: error: {self.first_failure}; the local runner did not stop within "
            f"{self.grace_s:g} s after it, so the run ends here (nothing was published)",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(BaseException):
            self.stop_processes()
        for cleanup in reversed(list(_cleanups)):
            with contextlib.suppress(BaseException):
                cleanup()
        os._exit(ABORT_EXIT)


def report_failure(message: str) -> None:
    """Tell the running local job's watchdog that something failed; nothing happens outside a local job."""
    watchdog = _active
    if watchdog is not None:
        watchdog.failed(message)


@contextlib.contextmanager
def watching(stop_processes: Callable[[], None], grace_s: float = GRACE_S) -> Iterator[JobWatchdog]:
    """While inside, failures reported with :func:`report_failure` start the deadline."""
    global _active
    watchdog = JobWatchdog(grace_s, stop_processes)
    previous, _active = _active, watchdog
    try:
        yield watchdog
    finally:
        watchdog.ended()
        _active = previous


@contextlib.contextmanager
def cleanup_if_aborted(cleanup: Callable[[], None]) -> Iterator[None]:
    """While inside, a watchdog that ends the process runs ``cleanup`` first (best effort)."""
    _cleanups.append(cleanup)
    try:
        yield
    finally:
        _cleanups.remove(cleanup)
