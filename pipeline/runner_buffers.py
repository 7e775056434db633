"""Disk-backed buffers for Beam's local runner, so its process does not hold every row in memory.

The FnApiRunner behind the DirectRunner keeps each PCollection that crosses a fused-stage boundary
(``execution.ListBuffer``) and each shuffle (``execution.GroupingBuffer``) in its own process until
the last consumer has run, and sends a worker its whole part of a stage's input as one gRPC
message. A local ingest must pass O(rows) through such buffers (interactions grouped by user), so
with Beam's classes the runner's memory grows with the input: about 190-240 MB per million rows
(docs/SCALE_EVIDENCE.md).

:func:`install` swaps in two subclasses:

- :class:`SpillingListBuffer` appends each chunk a worker sends back (up to a few MB) to an
  unlinked temporary file and keeps only its offset and length;
- :class:`SpillingGroupingBuffer` keeps a shuffle's values encoded in such a file, per key a list
  of runs, and encodes each worker's part of the grouped output in chunks of about
  ``CHUNK_BYTES``, spilled as they are made;

and makes the runner send stage inputs in messages of about ``CHUNK_BYTES``, each input from its
own thread so a worker can start on it (see :func:`install`). What stays in memory
is one key's values at a time, one chunk in flight per worker, and small per-chunk records.
Elements, their order and their assignment to workers are Beam's own, so outputs do not change.
Dataflow does not run this code.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass

# Chunks at least this large go to disk; smaller ones (side inputs, counts) stay in memory.
SPILL_MIN_BYTES = 64 << 10
# Largest piece of a stage's input the runner encodes, keeps or sends at once.
CHUNK_BYTES = 2 << 20
# Most bytes of stage input the runner queues for sending to a worker (Beam's default: two 100 MB queues).
SEND_QUEUE_BYTES = 8 << 20


class SpillFile:
    """An unlinked temporary file that byte strings are appended to and read back from; thread-safe."""

    def __init__(self):
        # Open for the buffer's lifetime (under TMPDIR); closed, and its space freed, with the last reference.
        self._file = tempfile.TemporaryFile(prefix="videorec-runner-")  # noqa: SIM115
        self._size = 0
        self._lock = threading.Lock()

    def put(self, data: bytes) -> Spilled:
        with self._lock:
            offset = self._size
            self._size += len(data)
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.pwrite(self._file.fileno(), view[written:], offset + written)
        except OSError as error:
            raise OSError(
                error.errno,
                f"the local runner keeps stage data in a temporary file under {tempfile.gettempdir()} "
                f"and could not write it ({error.strerror}); set TMPDIR to a folder on a disk with room "
                "(about 35 bytes per interaction)",
            ) from error
        return Spilled(self, offset, len(data))

    def read(self, offset: int, length: int) -> bytes:
        parts = []
        while length > 0:
            part = os.pread(self._file.fileno(), length, offset)
            if not part:
                raise OSError(f"the local runner's temporary file under {tempfile.gettempdir()} ended early")
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts) if len(parts) != 1 else parts[0]


@dataclass(frozen=True)
class Spilled:
    """``length`` bytes at ``offset`` of ``file``; holding one keeps the file open."""

    file: SpillFile
    offset: int
    length: int

    def load(self) -> bytes:
        return self.file.read(self.offset, self.length)


def loaded(entry: bytes | Spilled) -> bytes:
    return entry.load() if isinstance(entry, Spilled) else entry


class Chunks(list):
    """A list of in-memory or spilled chunks that yields bytes when iterated, one chunk at a time."""

    def __iter__(self):
        for entry in list.__iter__(self):
            yield loaded(entry)


def beam_classes():
    """Beam's own ``(ListBuffer, GroupingBuffer)``, also after :func:`install`."""
    from apache_beam.runners.portability.fn_api_runner import execution

    return getattr(execution, "_videorec_beam_classes", (execution.ListBuffer, execution.GroupingBuffer))


def _classes():
    from apache_beam.coders.coder_impl import create_InputStream, create_OutputStream
    from apache_beam.transforms.window import GlobalWindow, GlobalWindows
    from apache_beam.utils import windowed_value

    beam_list_buffer, beam_grouping_buffer = beam_classes()

    class SpillingListBuffer(beam_list_buffer):
        """``ListBuffer`` whose chunks of ``SPILL_MIN_BYTES`` or more live in a ``SpillFile``."""

        def __init__(self, coder_impl):
            super().__init__(coder_impl)
            self._spill: SpillFile | None = None
            self._spill_lock = threading.Lock()

        def append(self, element: bytes) -> None:
            if len(element) >= SPILL_MIN_BYTES:
                with self._spill_lock:
                    if self._spill is None:
                        self._spill = SpillFile()
                element = self._spill.put(element)
            super().append(element)

        def copy(self):
            new = SpillingListBuffer(self._coder_impl)
            new._inputs = list(self._inputs)
            return new

        def partition(self, n: int):
            if self.cleared:
                raise RuntimeError("Trying to partition a cleared ListBuffer.")
            if len(self._inputs) >= n or not self._inputs:
                return [Chunks(self._inputs[k::n]) for k in range(n)]
            # Fewer chunks than workers: Beam re-deals the elements; that needs them in memory,
            # which is at most n - 1 chunks.
            spilled, self._inputs = self._inputs, [loaded(entry) for entry in self._inputs]
            try:
                return super().partition(n)
            finally:
                self._inputs = spilled

        def __iter__(self):
            if self.cleared:
                raise RuntimeError("Trying to iterate through a cleared ListBuffer.")
            return iter(Chunks(self._inputs))

        def clear(self) -> None:
            super().clear()
            self._spill = None

    class SpillingGroupingBuffer(beam_grouping_buffer):
        """``GroupingBuffer`` keeping values encoded in a ``SpillFile`` (global windowing only)."""

        def __init__(self, pre_grouped_coder, post_grouped_coder, windowing, **beam_arguments):
            # Arguments Beam adds in later releases (2.78: ``clock``) pass through as they are;
            # pipeline/beam_support.py checks the signature is one this class was tested with.
            super().__init__(pre_grouped_coder, post_grouped_coder, windowing, **beam_arguments)
            self._spills = windowing.is_default()
            if self._spills:
                self._value_coder = pre_grouped_coder.value_coder().get_impl()
                self._file = SpillFile()
                # key (encoded) -> [(Spilled run of nested-encoded values, number of values)]
                self._runs: dict[bytes, list[tuple[Spilled, int]]] = collections.defaultdict(list)
                self._lock = threading.Lock()

        def append(self, elements_data: bytes) -> None:
            if not self._spills:
                return super().append(elements_data)
            if self._grouped_output:
                raise RuntimeError("Grouping table append after read.")
            element_coder = self._pre_grouped_coder.get_impl()
            key_coder = self._key_coder.get_impl()
            streams: dict[bytes, list] = {}
            stream = create_InputStream(elements_data)
            while stream.size() > 0:
                key, value = element_coder.decode_from_stream(stream, True).value
                encoded_key = key_coder.encode(key)
                run = streams.get(encoded_key)
                if run is None:
                    run = streams[encoded_key] = [create_OutputStream(), 0]
                self._value_coder.encode_to_stream(value, run[0], True)
                run[1] += 1
            with self._lock:
                for encoded_key, (values, count) in streams.items():
                    self._runs[encoded_key].append((self._file.put(values.get()), count))

        def extend(self, input_buffer) -> None:
            if not self._spills or not isinstance(input_buffer, SpillingGroupingBuffer):
                return super().extend(input_buffer)
            for key, runs in input_buffer._runs.items():
                self._runs[key].extend(runs)

        def _values(self, runs) -> list:
            values = []
            for spilled, count in runs:
                stream = create_InputStream(spilled.load())
                values.extend(self._value_coder.decode_from_stream(stream, True) for _ in range(count))
            return values

        def partition(self, n: int):
            if not self._spills:
                return super().partition(n)
            if not self._grouped_output:
                pane = windowed_value.PaneInfo(
                    is_first=True,
                    is_last=True,
                    timing=windowed_value.PaneInfoTiming.ON_TIME,
                    index=0,
                    nonspeculative_index=0,
                )
                in_global_window = GlobalWindows.windowed_value(
                    None, timestamp=GlobalWindow().max_timestamp(), pane_info=pane
                ).with_value
                grouped_coder = self._post_grouped_coder.get_impl()
                key_coder = self._key_coder.get_impl()
                out = SpillFile()
                parts = [Chunks() for _ in range(n)]
                streams = [create_OutputStream() for _ in range(n)]
                for index, (encoded_key, runs) in enumerate(self._runs.items()):
                    part = index % n
                    group = in_global_window((key_coder.decode(encoded_key), self._values(runs)))
                    grouped_coder.encode_to_stream(group, streams[part], True)
                    if streams[part].size() >= CHUNK_BYTES:
                        parts[part].append(out.put(streams[part].get()))
                        streams[part] = create_OutputStream()
                for part, stream in enumerate(streams):
                    if stream.size():
                        parts[part].append(out.put(stream.get()))
                self._grouped_output = parts
                self._runs.clear()
                self._file = None
            return self._grouped_output

    return SpillingListBuffer, SpillingGroupingBuffer


def install():
    """Make this process's FnApiRunner use the spilling buffers and send inputs in chunks.

    Returns a function that puts Beam's own classes, methods and constants back; called by
    ``pipeline.local_runner.local_run`` when the job ends. Check the installed Beam first
    (``pipeline.beam_support``).

    Beam's runner writes a bundle's whole input to the data channel before it sends the worker the
    request to process it, so a worker only starts reading once everything sent fits in the queues
    between them. That holds for Beam's single message per worker, not for chunks: here each input
    is written from its own thread while the runner goes on to send the request, and the bundle
    fails if a sender did (after closing its stream, so the worker never waits for the rest).

    When a bundle fails in the runner while workers are still sending output, Beam stops reading
    it; a worker then blocks on its full send queue, never finishes and never exits, and Beam's
    shutdown waits for it for ever (``pipeline/job_watchdog.py`` has the whole story). So every
    failure goes to the job watchdog, and from then on :func:`drain_after_failure` empties every
    data-plane queue of the job's channels (the data is dropped: the job has failed) until it ends.
    """
    from apache_beam.runners.portability.fn_api_runner import execution, fn_runner
    from apache_beam.runners.worker import data_plane

    from pipeline import job_watchdog

    saved_constants = (data_plane._DEFAULT_SEND_QUEUE_MAX_BYTES, data_plane._DEFAULT_SIZE_FLUSH_THRESHOLD)
    saved_classes = (execution.ListBuffer, execution.GroupingBuffer, fn_runner.ListBuffer)
    saved_methods = (fn_runner.BundleManager._send_input_to_worker, fn_runner.BundleManager.process_bundle)
    if getattr(execution, "_videorec_beam_classes", None):
        raise RuntimeError("the local runner's buffers are installed already (one local job at a time)")
    channels: weakref.WeakSet = weakref.WeakSet()
    # Beam's queues take no weak reference; the recent bundles' ones are kept (empty once read).
    received_queues: collections.deque = collections.deque(maxlen=4096)
    data_plane._DEFAULT_SEND_QUEUE_MAX_BYTES = SEND_QUEUE_BYTES
    data_plane._DEFAULT_SIZE_FLUSH_THRESHOLD = CHUNK_BYTES
    list_buffer, grouping_buffer = _classes()
    execution._videorec_beam_classes = (execution.ListBuffer, execution.GroupingBuffer)
    execution.ListBuffer = list_buffer
    fn_runner.ListBuffer = list_buffer
    execution.GroupingBuffer = grouping_buffer

    def send_input_to_worker(manager, process_bundle_id, read_transform_id, byte_streams) -> None:
        data_conn = manager._worker_handler.data_conn
        data_out = data_conn.output_stream(process_bundle_id, read_transform_id)

        def write_all():
            for byte_stream in byte_streams or []:
                data_out.write(byte_stream)
                if data_out.size() >= CHUNK_BYTES:
                    data_out.flush()

        if not isinstance(data_conn, data_plane._GrpcDataChannel):
            # An in-process worker (``--direct_running_mode=in_memory``) runs the bundle inside the
            # request, so its input must be complete before; its channel is an unbounded list.
            write_all()
            data_out.close()
            return
        # The bundle's channel and receive queue (Beam makes the same one when it reads the output),
        # for drain_after_failure.
        channels.add(data_conn)
        received = data_conn._receiving_queue(process_bundle_id)
        if received is not None:
            received_queues.append(received)
        errors: list[BaseException] = []

        def send():
            try:
                write_all()
            except BaseException as error:  # handed to the bundle's thread by process_bundle
                errors.append(error)
            finally:
                data_out.close()

        sender = threading.Thread(target=send, name=f"videorec-send-{read_transform_id}", daemon=True)
        sender.start()
        manager.__dict__.setdefault("_videorec_senders", []).append((sender, errors, read_transform_id))

    process_bundle = fn_runner.BundleManager.process_bundle

    def process_bundle_with_senders(manager, *args, **kwargs):
        manager._videorec_senders = []
        try:
            result = process_bundle(manager, *args, **kwargs)
        except BaseException as error:
            job_watchdog.report_failure(f"a bundle of the local runner failed: {error!r}"[:2000], error)
            for sender, _, _ in manager._videorec_senders:
                sender.join(timeout=DRAIN_S)  # unblocked by drain_after_failure
            raise
        for sender, _, _ in manager._videorec_senders:
            sender.join()
        for _, errors, transform_id in manager._videorec_senders:
            if errors:
                error = RuntimeError(f"sending the input of {transform_id} to a worker failed")
                error.__cause__ = errors[0]
                job_watchdog.report_failure(f"{error} ({errors[0]!r})", error)
                raise error
        return result

    fn_runner.BundleManager._send_input_to_worker = send_input_to_worker
    fn_runner.BundleManager.process_bundle = process_bundle_with_senders
    stop_draining = job_watchdog.on_failure(
        lambda job_ended: threading.Thread(
            target=drain_after_failure,
            args=(channels, received_queues, job_ended),
            name="videorec-drain",
            daemon=True,
        ).start()
    )

    def restore() -> None:
        stop_draining()
        data_plane._DEFAULT_SEND_QUEUE_MAX_BYTES, data_plane._DEFAULT_SIZE_FLUSH_THRESHOLD = saved_constants
        execution.ListBuffer, execution.GroupingBuffer, fn_runner.ListBuffer = saved_classes
        fn_runner.BundleManager._send_input_to_worker, fn_runner.BundleManager.process_bundle = saved_methods
        del execution._videorec_beam_classes

    return restore


# How long a failed bundle waits for its senders (which the drain unblocks) before it raises.
DRAIN_S = 30.0


def drain_after_failure(channels, received_queues, job_ended) -> None:
    """Until ``job_ended()``: empty every send, staging and receive queue of the job's data channels.

    After a failure nothing the runner or a worker still sends matters, but a thread blocked on a
    full queue keeps a worker from exiting and Beam's shutdown from returning.
    """
    while not job_ended():
        queues = list(received_queues)
        for channel in list(channels):
            queues += [channel._pending_send, channel._to_send]
            with contextlib.suppress(RuntimeError):  # Beam's reader adds a queue while we look
                queues += list(channel._received.values())
        for pending in queues:
            with contextlib.suppress(queue.Empty):
                while True:
                    pending.get(block=False)
        time.sleep(0.02)
