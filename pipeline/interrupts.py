"""Ctrl-C and SIGTERM during an ingest run: the run cleans up, then says which signal stopped it.

:func:`interrupts_raise` turns the first SIGINT / SIGTERM into ``KeyboardInterrupt`` in the main
thread, after stopping the job's processes (:class:`SignalWatch`); the run's clean-up then raises
:class:`Interrupted` (exit 130 or 143). Used by :mod:`pipeline.staged_output` and
:mod:`pipeline.root_run`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline import job_watchdog
from pipeline.versions.folders import process_is_dead


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
