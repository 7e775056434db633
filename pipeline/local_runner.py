"""Local (DirectRunner) runs: close a data-loss race in Beam's runner, and keep its memory flat.

Data-plane race.

Root cause of the intermittent "users seen != accounted for" at 2M rows (issue 9): the
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
(docs/SCALE.md). The settings apply to this process through ``mallopt`` and to the workers it
starts through the ``MALLOC_*`` environment variables glibc reads; a variable the user set wins.
Each local SDK worker also bounds its data-plane queues and drops each stage once its bundle is
done (``bound_worker_memory``, applied by ``pipeline/worker_site``); the runner's own buffers are
``pipeline/runner_buffers.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h) and the environment variables naming the same settings.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_SETTINGS = {
    "MALLOC_ARENA_MAX": (_M_ARENA_MAX, 2),
    "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 256 * 1024),
    "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 1024 * 1024),
}


def avoid_data_plane_race() -> None:
    """Make the local runner's data plane flush only by size (no periodic flusher thread)."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def keep_memory_flat() -> dict[str, int]:
    """Apply ``MALLOC_SETTINGS`` to this process and (by environment) to worker processes it starts.

    Returns the settings applied in this process; empty where the C library is not glibc (the
    variables are still exported, and are harmless there).
    """
    for name, (_, value) in MALLOC_SETTINGS.items():
        os.environ.setdefault(name, str(value))
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    if libc is None or not hasattr(libc, "mallopt"):
        log.info("no glibc mallopt here: local runs keep the C library's default malloc settings")
        return {}
    applied = {}
    for name, (parameter, _) in MALLOC_SETTINGS.items():
        value = int(os.environ[name])
        if libc.mallopt(parameter, value) == 1:
            applied[name] = value
    return applied


# What a local SDK worker buffers before sending its output to the runner, and its send queue's cap.
WORKER_FLUSH_BYTES = 2 << 20
WORKER_SEND_QUEUE_BYTES = 8 << 20


def bound_worker_memory() -> None:
    """In a local SDK worker (``pipeline/worker_site``): keep what a finished stage leaves behind small.

    - Output goes to the runner in messages of about ``WORKER_FLUSH_BYTES``, with at most
      ``WORKER_SEND_QUEUE_BYTES`` queued (Beam's defaults: 10 MB messages, two 100 MB queues).
    - A bundle's processor is shut down when the bundle is done instead of being cached for the
      next bundle of its stage. The local runner runs each stage as one bundle per worker, so the
      cache is never used, while each cached processor keeps its DoFns and its output streams,
      whose buffers (C memory) have grown to the message size: at 2M rows the largest worker
      peaked at 384 MB with the cache and 310 MB without (docs/SCALE.md). DoFns get ``teardown``
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
