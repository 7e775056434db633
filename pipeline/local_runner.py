"""Local runs: the runner chosen on purpose, Beam's internals checked and patched only for it.

Runner. Without ``--runner`` (or with ``--runner DirectRunner``) an ingest runs on Beam's
``FnApiRunner``, named explicitly: Beam's ``DirectRunner`` is the ``SwitchingDirectRunner``, which
in Beam 2.77/2.78 first tries the Prism runner, downloading it from the internet, and falls back to
the FnApiRunner only when that fails, so the engine would depend on the network. :func:`choose_runner`
adds the worker settings (one SDK worker process per core); :class:`RunnerChoice` says what runs.
Any other runner (Prism, Flink, Spark, Portable, Dataflow) runs as Beam makes it, with no patch.

Patches. :func:`local_run` checks the installed Beam (:mod:`pipeline.beam_support`, exit 2 when it
does not fit), then for the job's duration only: closes the data-plane race below, sets malloc
tuning, installs the runner's disk-backed buffers (:mod:`pipeline.runner_buffers`), puts
``pipeline/worker_site`` on the workers' ``PYTHONPATH`` (each worker checks and bounds itself there;
a worker that cannot exits, which fails the job), turns a worker process that exits into a job
failure, and starts the :mod:`pipeline.job_watchdog`. All but the malloc tuning of this process
(``mallopt`` has no undo) is undone when the job ends.

Data-plane race.

Root cause of the intermittent "users seen != accounted for" at 2M rows: the
FnApiRunner behind the DirectRunner sends each stage's input to its SDK workers through
``TimeBasedBufferingClosableOutputStream`` (``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS``,
1000 ms). A periodic thread flushes that stream with ``callback(self.get())`` then
``self._clear()``, while the runner thread keeps writing input chunks with no lock between
them. A chunk written after ``get()`` and before ``_clear()`` is wiped, so the worker never sees
those elements, and nothing reports it. Chunks are whole runs of elements (about 10 MB), which is
why the loss was every other user over one contiguous range: one producing worker's last output
chunk. The window is widest when the flushing thread is descheduled, hence only under load.

With the limit at 0 the runner uses the size-based stream, which has no flushing thread, so a
batch job's inputs cannot race. Dataflow does not run this code. The manifest's reconciliation
stays the guard against any loss whatever its cause.

Memory. The runner process and its SDK worker processes pass every shuffle through gRPC and
protobuf buffers of many MB from many threads. With glibc's defaults each thread gets its own
malloc arena and the mmap threshold grows with the largest buffer freed, so freed buffers stay in
the heap: at 1M rows the runner held 876 MB while Python itself had about 65 MB allocated
(tracemalloc). Two arenas, a fixed 256 KiB mmap threshold (big buffers go back to the system when
freed) and a 1 MiB trim threshold bring the largest process to 391 MB on the same run
(docs/SCALE_EVIDENCE.md). The settings apply to this process through ``mallopt`` and to the workers it
starts through the ``MALLOC_*`` environment variables glibc reads; a variable the user set wins.
Each local SDK worker also bounds its data-plane queues and drops each stage once its bundle is
done (``bound_worker_memory``, applied by ``pipeline/worker_site``); the runner's own buffers are
``pipeline/runner_buffers.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import beam_support, job_watchdog, runner_buffers

log = logging.getLogger(__name__)

LOCAL_RUNNER = "FnApiRunner"
# Names a user may give for "the local runner" (as Beam reads them: any case, "Runner" optional, a
# module path allowed); each runs as LOCAL_RUNNER, and the runner line says so.
LOCAL_ALIASES = ("directrunner", "switchingdirectrunner", "testdirectrunner", "fnapirunner")


def _means_the_local_runner(name: str) -> bool:
    short = name.rpartition(".")[2].lower()
    return short in LOCAL_ALIASES or f"{short}runner" in LOCAL_ALIASES


# glibc mallopt parameters (malloc.h) and the environment variables naming the same settings.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_SETTINGS = {
    "MALLOC_ARENA_MAX": (_M_ARENA_MAX, 2),
    "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 256 * 1024),
    "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 1024 * 1024),
}

WORKER_SITE = str(Path(__file__).resolve().parent / "worker_site")
# Set for the job's worker processes: the driver's Beam version (a worker must run the same) and the
# PYTHONPATH entry of the worker site (which the frame sampler's own subprocess leaves out).
BEAM_VERSION_ENV = "VIDEOREC_BEAM_VERSION"
WORKER_SITE_ENV = "VIDEOREC_WORKER_SITE"


@dataclass(frozen=True)
class RunnerChoice:
    """The runner a job runs on, as the first progress line and run_stats.json name it."""

    name: str
    local: bool
    beam_version: str
    workers: int | None = None
    running_mode: str | None = None
    note: str = ""

    def describe(self) -> str:
        where = (
            f"local, {self.workers} worker process(es), {self.running_mode}"
            if self.local
            else "no local patches"
        )
        return f"runner {self.name} ({where}), Apache Beam {self.beam_version}{self.note}"

    def stats(self) -> dict:
        fields = {"runner": self.name, "beam_version": self.beam_version, "local_patches": self.local}
        if self.local:
            fields |= {"workers": self.workers, "running_mode": self.running_mode}
        return fields


def _flag_value(beam_args: list[str], flag: str) -> str | None:
    for index, arg in enumerate(beam_args):
        if arg == flag and index + 1 < len(beam_args):
            return beam_args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def choose_runner(beam_args: list[str]) -> tuple[list[str], RunnerChoice]:
    """The Beam arguments to run with and the runner they choose.

    Without ``--runner`` or with a name of the local runner (:data:`LOCAL_ALIASES`): the FnApiRunner,
    one worker process per core (``--direct_num_workers``, ``--direct_running_mode`` and the worker
    log level as given, else these defaults). Any other runner: the arguments as given.
    """
    import apache_beam

    named = _flag_value(beam_args, "--runner")
    if named is not None and not _means_the_local_runner(named):
        return beam_args, RunnerChoice(named, local=False, beam_version=apache_beam.__version__)
    rest, skip = [], False
    for arg in beam_args:
        if skip:
            skip = False
        elif arg == "--runner":
            skip = True
        elif not arg.startswith("--runner="):
            rest.append(arg)
    defaults = []
    if _flag_value(rest, "--direct_num_workers") is None:
        defaults.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if _flag_value(rest, "--direct_running_mode") is None:
        defaults.append("--direct_running_mode=multi_processing")
    if not any(a.startswith("--default_sdk_harness_log_level") for a in rest):
        defaults.append("--default_sdk_harness_log_level=ERROR")
    args = [f"--runner={LOCAL_RUNNER}", *defaults, *rest]
    workers = int(_flag_value(args, "--direct_num_workers") or 1) or (os.cpu_count() or 1)
    note = f" (--runner {named} runs as {LOCAL_RUNNER} here)" if named and named != LOCAL_RUNNER else ""
    choice = RunnerChoice(
        LOCAL_RUNNER,
        local=True,
        beam_version=apache_beam.__version__,
        workers=workers,
        running_mode=_flag_value(args, "--direct_running_mode"),
        note=note,
    )
    return args, choice


def avoid_data_plane_race() -> int:
    """Make the local runner's data plane flush only by size (no periodic flusher thread).

    Returns the value it replaced, for :func:`local_run` to put back.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    before = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
    return before


def keep_memory_flat() -> dict[str, int]:
    """Apply ``MALLOC_SETTINGS`` to this process (``mallopt``).

    Returns the settings applied in this process; empty where the C library is not glibc. A
    variable the user set wins. Worker processes get the variables from :func:`worker_environment`.
    """
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    if libc is None or not hasattr(libc, "mallopt"):
        log.info("no glibc mallopt here: local runs keep the C library's default malloc settings")
        return {}
    applied = {}
    for name, (parameter, _) in MALLOC_SETTINGS.items():
        value = int(os.environ.get(name, MALLOC_SETTINGS[name][1]))
        if libc.mallopt(parameter, value) == 1:
            applied[name] = value
    return applied


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def worker_environment(beam_version: str) -> dict[str, str]:
    """What the job's worker processes get in their environment (see :data:`WORKER_SITE`)."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != WORKER_SITE]
    return {
        "PYTHONPATH": os.pathsep.join([WORKER_SITE, *paths]),
        BEAM_VERSION_ENV: beam_version,
        WORKER_SITE_ENV: WORKER_SITE,
        **{name: os.environ.get(name, str(value)) for name, (_, value) in MALLOC_SETTINGS.items()},
    }


def watch_workers() -> None:
    """Make a local SDK worker process that exits with an error a failure of the job.

    Beam's runner raises it in a side thread and then waits for the worker for ever; here it goes to
    the job watchdog, which ends the job :data:`job_watchdog.WORKER_EXIT_GRACE_S` later unless it
    ended already.
    Undone by :func:`unwatch_workers`.
    """
    from apache_beam.runners.portability import local_job_service

    run = local_job_service.SubprocessSdkWorker.run
    if getattr(run, "_videorec_watched", False):
        return

    def run_and_report(worker):
        try:
            run(worker)
        except Exception as error:  # reported instead of Beam's thread traceback; the watchdog ends the job
            job_watchdog.report_failure(
                f"a local Beam worker process failed: {error}", error, job_watchdog.WORKER_EXIT_GRACE_S
            )

    run_and_report._videorec_watched = run
    local_job_service.SubprocessSdkWorker.run = run_and_report


def unwatch_workers() -> None:
    from apache_beam.runners.portability import local_job_service

    original = getattr(local_job_service.SubprocessSdkWorker.run, "_videorec_watched", None)
    if original is not None:
        local_job_service.SubprocessSdkWorker.run = original


@contextlib.contextmanager
def local_run(choice: RunnerChoice, stop_processes) -> Iterator[None]:
    """While inside, this process runs local jobs with the patches above; nothing for other runners.

    Raises ``beam_support.UnsupportedBeam`` (before changing anything) when the installed Beam does
    not fit them. ``stop_processes`` kills the job's processes (for the watchdog).
    """
    if not choice.local:
        yield
        return
    beam_support.check_local_runner_support(beam_support.RUNNER)
    if not os.path.isfile(os.path.join(WORKER_SITE, "sitecustomize.py")):
        raise beam_support.UnsupportedBeam(
            f"{WORKER_SITE}/sitecustomize.py is missing from this installation, so local workers would "
            f"run unpatched; {beam_support.INSTALL_HINT}"
        )
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    keep_memory_flat()
    time_limit = avoid_data_plane_race()
    restore_buffers = runner_buffers.install()
    watch_workers()
    try:
        with _environment(**worker_environment(choice.beam_version)), job_watchdog.watching(stop_processes):
            yield
    finally:
        unwatch_workers()
        restore_buffers()
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = time_limit


# What a local SDK worker buffers before sending its output to the runner, and its send queue's cap.
WORKER_FLUSH_BYTES = 2 << 20
WORKER_SEND_QUEUE_BYTES = 8 << 20


def prepare_worker() -> None:
    """In a local SDK worker (``pipeline/worker_site``): check, then bound its memory.

    Raises ``beam_support.UnsupportedBeam`` before changing anything when this worker's Beam is not
    the driver's or does not fit the worker patches; the worker site then ends the process.
    """
    import apache_beam

    driver = os.environ.get(BEAM_VERSION_ENV)
    if driver != apache_beam.__version__:
        raise beam_support.UnsupportedBeam(
            f"this worker runs Apache Beam {apache_beam.__version__}, the job's driver runs {driver}; "
            f"{beam_support.INSTALL_HINT}"
        )
    beam_support.check_local_runner_support(beam_support.WORKER)
    bound_worker_memory()


def bound_worker_memory() -> None:
    """In a local SDK worker (``pipeline/worker_site``): keep what a finished stage leaves behind small.

    - Output goes to the runner in messages of about ``WORKER_FLUSH_BYTES``, with at most
      ``WORKER_SEND_QUEUE_BYTES`` queued (Beam's defaults: 10 MB messages, two 100 MB queues).
    - A bundle's processor is shut down when the bundle is done instead of being cached for the
      next bundle of its stage. The local runner runs each stage as one bundle per worker, so the
      cache is never used, while each cached processor keeps its DoFns and its output streams,
      whose buffers (C memory) have grown to the message size: at 2M rows the largest worker
      peaked at 384 MB with the cache and 310 MB without (docs/SCALE_EVIDENCE.md). DoFns get ``teardown``
      at that point, as Beam allows at any time after a bundle.
    """
    import inspect

    from apache_beam.runners.worker import data_plane, sdk_worker

    data_plane._DEFAULT_SEND_QUEUE_MAX_BYTES = WORKER_SEND_QUEUE_BYTES
    data_plane._DEFAULT_SIZE_FLUSH_THRESHOLD = WORKER_FLUSH_BYTES
    init = data_plane.SizeBasedBufferingClosableOutputStream.__init__
    names = [p.name for p in inspect.signature(init).parameters.values() if p.default is not p.empty]
    defaults = list(init.__defaults__)
    defaults[names.index("size_flush_threshold")] = WORKER_FLUSH_BYTES
    init.__defaults__ = tuple(defaults)

    release = sdk_worker.BundleProcessorCache.release
    if getattr(release, "_shuts_down", False):
        return

    def release_and_shut_down(cache, instruction_id):
        release(cache, instruction_id)
        with cache._lock:
            finished = [p for processors in cache.cached_bundle_processors.values() for p in processors]
            cache.cached_bundle_processors.clear()
        for processor in finished:
            processor.shutdown()

    release_and_shut_down._shuts_down = True
    sdk_worker.BundleProcessorCache.release = release_and_shut_down
