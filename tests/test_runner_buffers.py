"""Disk-backed runner buffers (pipeline/runner_buffers.py): same elements as Beam's, not in memory.

Each buffer is checked against Beam's own class on the same input (decoded element for element,
worker part for worker part), with ``tracemalloc`` showing where the data lives, and a real
two-worker pipeline runs through them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.coders.coder_impl import create_InputStream, create_OutputStream
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import execution
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, window
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import runner_buffers
from pipeline.local_runner import WORKER_FLUSH_BYTES, WORKER_SEND_QUEUE_BYTES, choose_runner, local_run

PRE = coders.WindowedValueCoder(coders.TupleCoder([coders.StrUtf8Coder(), coders.BytesCoder()]))
POST = coders.WindowedValueCoder(
    coders.TupleCoder([coders.StrUtf8Coder(), coders.IterableCoder(coders.BytesCoder())])
)
GLOBAL = core.Windowing(window.GlobalWindows())


@pytest.fixture(scope="module")
def classes():
    return runner_buffers._classes()


@pytest.fixture
def installed():
    """The spilling buffers and chunked sends, as a local run has them; Beam's own afterwards."""
    restore = runner_buffers.install()
    yield
    restore()
    assert execution.GroupingBuffer.__name__ == "GroupingBuffer"


def local_workers():
    """What every local ingest runs its job inside (``local_runner.local_run``)."""
    _, choice = choose_runner(["--direct_num_workers=2"])
    return local_run(choice, stop_processes=lambda: None)


def encoded_chunks(pairs, per_chunk):
    """The runner's input to a shuffle: windowed KVs, nested-encoded, ``per_chunk`` to a chunk."""
    impl, chunks = PRE.get_impl(), []
    for start in range(0, len(pairs), per_chunk):
        stream = create_OutputStream()
        for key, value in pairs[start : start + per_chunk]:
            impl.encode_to_stream(WindowedValue((key, value), 0, [window.GlobalWindow()]), stream, True)
        chunks.append(stream.get())
    return chunks


def decoded_parts(parts):
    """Each worker part's groups as ``[(key, [values])]``, in the order sent."""
    impl, out = POST.get_impl(), []
    for part in parts:
        groups = []
        for chunk in part:
            stream = create_InputStream(chunk)
            while stream.size() > 0:
                key, values = impl.decode_from_stream(stream, True).value
                groups.append((key, list(values)))
        out.append(groups)
    return out


def shuffle_input(keys=40, values_per_key=30, size=300):
    return [(f"user-{k % keys}", bytes([k % 251]) * (size + k % 7)) for k in range(keys * values_per_key)]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_grouping_buffer_gives_beams_groups_to_the_same_workers(classes, monkeypatch, workers):
    monkeypatch.setattr(runner_buffers, "CHUNK_BYTES", 2_000)
    _, spilling = classes
    pairs = shuffle_input()
    ours, beams = spilling(PRE, POST, GLOBAL), runner_buffers.beam_classes()[1](PRE, POST, GLOBAL)
    for chunk in encoded_chunks(pairs, per_chunk=97):
        ours.append(chunk)
        beams.append(chunk)
    our_parts = ours.partition(workers)
    assert decoded_parts(our_parts) == decoded_parts(beams.partition(workers))
    assert all(len(list(part)) > 1 for part in our_parts), "each part is sent in several chunks"
    assert ours.partition(workers) is our_parts, "partitioned once, as Beam's"
    assert sorted(g for part in decoded_parts([list(ours)]) for g in part) == sorted(
        (key, [v for k, v in pairs if k == key]) for key in {k for k, _ in pairs}
    )


def test_grouping_buffer_keeps_values_out_of_memory(classes):
    _, spilling = classes
    pairs = shuffle_input(keys=20, values_per_key=400, size=2_000)  # about 16 MB of values
    chunks = encoded_chunks(pairs, per_chunk=500)
    data_bytes = sum(len(c) for c in chunks)

    def held(buffer):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for chunk in chunks:
                buffer.append(chunk)
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    assert held(runner_buffers.beam_classes()[1](PRE, POST, GLOBAL)) > data_bytes
    assert held(spilling(PRE, POST, GLOBAL)) < data_bytes / 20


def test_list_buffer_parts_and_copies_hold_beams_bytes(classes):
    listing, _ = classes
    chunks = [bytes([i]) * (runner_buffers.SPILL_MIN_BYTES + i) for i in range(5)] + [b"small"]
    ours, beams = listing(None), runner_buffers.beam_classes()[0](None)
    for chunk in chunks:
        ours.append(chunk)
        beams.append(chunk)
    assert [list(part) for part in ours.partition(2)] == [list(part) for part in beams.partition(2)]
    assert list(ours) == chunks
    copy = ours.copy()
    ours.clear()
    assert list(copy) == chunks, "a copy outlives the original's clear()"
    with pytest.raises(RuntimeError, match="cleared"):
        list(ours)


def test_list_buffer_with_fewer_chunks_than_workers_deals_elements_as_beam(classes):
    listing, _ = classes
    impl = coders.BytesCoder().get_impl()
    stream = create_OutputStream()
    for n in range(3_000):
        impl.encode_to_stream(b"%d" % n * 30, stream, True)
    ours, beams = listing(impl), runner_buffers.beam_classes()[0](impl)
    ours.append(stream.get())
    beams.append(stream.get())
    assert [list(p) for p in ours.partition(3)] == [list(p) for p in beams.partition(3)]


@pytest.mark.parametrize(
    "mode",
    [
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        ["--direct_running_mode=in_memory"],
    ],
)
def test_local_pipeline_through_spilling_buffers(mode, installed):
    """Both local modes: worker processes (chunks sent from a thread) and the in-process worker,
    which runs a bundle inside its request (input written before)."""
    assert execution.GroupingBuffer.__name__ == "SpillingGroupingBuffer"
    options = PipelineOptions(["--runner=FnApiRunner", *mode])
    rows = [(f"u{n % 500}", n) for n in range(60_000)]
    expected = [(f"u{u}", sum(n for n in range(60_000) if n % 500 == u)) for u in range(500)]
    with beam.Pipeline(options=options) as pipeline:
        sums = (
            pipeline
            | beam.Create(rows)
            | "Pad" >> beam.Map(lambda kv: (kv[0], (kv[1], b"x" * 200)))
            | beam.GroupByKey()
            | beam.MapTuple(lambda user, values: (user, sum(n for n, _ in values)))
        )
        assert_that(sums, equal_to(expected))


def _worker_settings(_):
    from apache_beam.runners.worker import data_plane

    init = data_plane.SizeBasedBufferingClosableOutputStream.__init__
    return (
        os.getpid(),
        data_plane._DEFAULT_SEND_QUEUE_MAX_BYTES,
        max(init.__defaults__[:3], key=lambda d: d or 0),
    )


def test_local_workers_started_by_an_ingest_bound_their_output(tmp_path):
    """``local_runner.local_run`` (every local ingest) puts ``worker_site`` first: workers apply it."""
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    )
    driver = os.getpid()
    with local_workers(), beam.Pipeline(options=options) as pipeline:
        settings = pipeline | beam.Create(range(4)) | beam.Map(_worker_settings)
        assert_that(
            settings | beam.Map(lambda s: (s[0] != driver, s[1], s[2])) | beam.Distinct(),
            equal_to([(True, WORKER_SEND_QUEUE_BYTES, WORKER_FLUSH_BYTES)]),
        )


class _MarkTornDown(beam.DoFn):
    def __init__(self, folder: str):
        self.folder = folder

    def process(self, element):
        yield element % 2, element

    def teardown(self):
        with open(os.path.join(self.folder, f"torn-down-{os.getpid()}"), "w"):
            pass


def test_local_workers_shut_a_stage_down_when_its_bundle_is_done(tmp_path):
    """The next stage starts after the first stage's DoFns were torn down (their memory freed)."""
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    )
    folder = str(tmp_path)
    with local_workers(), beam.Pipeline(options=options) as pipeline:
        seen = (
            pipeline
            | beam.Create(range(100))
            | "First" >> beam.ParDo(_MarkTornDown(folder))
            | beam.GroupByKey()
            | "Next" >> beam.Map(lambda kv: any(n.startswith("torn-down-") for n in os.listdir(folder)))
        )
        assert_that(seen, equal_to([True, True]))


LARGE_STAGE_INPUT = """
import sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import data_plane
from pipeline import runner_buffers

runner_buffers.install()
runner_buffers.CHUNK_BYTES = 16 << 10
data_plane._DEFAULT_SEND_QUEUE_MAX_BYTES = 64 << 10
options = PipelineOptions(
    ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
)
with beam.Pipeline(options=options) as pipeline:
    (
        pipeline
        | beam.Create(range(3_000))
        | beam.Map(lambda n: (n % 50, b"v" * 20_000))
        | beam.GroupByKey()
        | beam.MapTuple(lambda key, values: sum(len(v) for v in values))
        | beam.combiners.Count.Globally()
        | beam.Map(lambda n: print("groups", n))
    )
"""


def test_a_stage_input_far_larger_than_the_queues_does_not_deadlock(tmp_path):
    """Beam sends a bundle's whole input before its process request; chunks of it must not wait for
    a worker that has not been told to start (60 MB of input, 16 KB chunks, 64 KB queues)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", LARGE_STAGE_INPUT], capture_output=True, text=True, timeout=120, check=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the pipeline hung: chunked stage input deadlocked against the process request")
    assert "groups 50" in out.stdout


def test_a_failed_send_fails_the_bundle_loudly(monkeypatch, installed):
    calls = {"n": 0}
    real_loaded = runner_buffers.loaded

    def failing_loaded(entry):
        calls["n"] += 1
        if isinstance(entry, runner_buffers.Spilled):
            raise OSError("disk gone")
        return real_loaded(entry)

    monkeypatch.setattr(runner_buffers, "loaded", failing_loaded)
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    )
    with pytest.raises(Exception, match="sending the input of"), beam.Pipeline(options=options) as pipeline:
        (
            pipeline
            | beam.Create(range(300))
            | beam.Map(lambda n: (n % 3, b"w" * 100_000))
            | beam.GroupByKey()
            | beam.MapTuple(lambda key, values: len(list(values)))
        )
    assert calls["n"] > 0
