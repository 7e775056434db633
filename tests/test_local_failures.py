"""An exception anywhere in a local run fails the job, never hangs it, and publishes nothing.

Each case runs a real ingest (ID-only, 150k rows, two worker processes) in a subprocess with one fault
injected into a patched path of the local runner (pipeline/runner_buffers.py, pipeline/worker_site):

- the runner's spill file stops accepting writes while stage outputs arrive;
- a chunked sender cannot read a spilled stage input back;
- a shuffle buffer cannot be made while a stage's output arrives (as Beam 2.78's new ``clock``
  argument did to the buffers written for 2.77, which hung one run in three before the fix);
- every worker fails its start-up check (it runs a Beam other than the driver's), so it exits
  before it connects; Beam's runner alone would wait for it for ever (pipeline/job_watchdog.py).

The subprocess gets the watchdog's grace period plus a margin to end; running past it is a hang.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gen_logs import LogShape, generate
from pipeline.job_watchdog import GRACE_S
from pipeline.staged_output import STAGING

REPO = Path(__file__).resolve().parents[1]
HANG_S = GRACE_S + 60

INJECT = """
import sys, threading
from pipeline import local_runner, runner_buffers

fault = sys.argv.pop(1)
lock, calls = threading.Lock(), [0]


def trip_after(n, error):
    with lock:
        calls[0] += 1
        if calls[0] > n:
            raise error


if fault == "spill-file":
    runner_buffers.SPILL_MIN_BYTES = 0  # every chunk goes through the spill file
    put = runner_buffers.SpillFile.put

    def failing_put(self, data):
        trip_after(60, OSError(5, "injected: the runner's spill file could not be written"))
        return put(self, data)

    runner_buffers.SpillFile.put = failing_put
elif fault == "sender":
    runner_buffers.SPILL_MIN_BYTES = 0
    loaded = runner_buffers.loaded

    def failing_loaded(entry):
        if isinstance(entry, runner_buffers.Spilled):
            trip_after(5, OSError("injected: a spilled stage input could not be read back"))
        return loaded(entry)

    runner_buffers.loaded = failing_loaded
elif fault == "grouping-buffer":
    classes = runner_buffers._classes

    def failing_classes():
        list_buffer, grouping_buffer = classes()

        class FailingGroupingBuffer(grouping_buffer):
            def __init__(self, *args, **kwargs):
                raise TypeError("injected: __init__() got an unexpected keyword argument 'clock'")

        return list_buffer, FailingGroupingBuffer

    runner_buffers._classes = failing_classes
elif fault == "worker-start":
    environment = local_runner.worker_environment
    local_runner.worker_environment = lambda version: {
        **environment(version),
        local_runner.BEAM_VERSION_ENV: "0.0.1",
    }

from pipeline.main import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def interactions(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("log") / "pairs.csv"
    generate(LogShape(rows=150_000, users=15_000, items=2_000, seed=5), path)
    return path


@pytest.mark.slow
def ingest_with(script: str, *args: str) -> subprocess.CompletedProcess:
    """``videorec ingest ARGS`` in a subprocess whose ``script`` injects a fault first; failing past
    ``HANG_S`` is a hang."""
    try:
        return subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=HANG_S, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the ingest hung for {HANG_S:g} s instead of failing")


IN_PROCESS = ("--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet")


@pytest.mark.parametrize(
    "fault, says",
    [
        ("spill-file", "injected: the runner's spill file could not be written"),
        ("sender", "injected: a spilled stage input could not be read back"),
        ("grouping-buffer", "injected: __init__() got an unexpected keyword argument 'clock'"),
        ("worker-start", "a local Beam worker could not start: this worker runs Apache Beam"),
    ],
)
def test_an_injected_fault_fails_the_ingest_and_publishes_nothing(tmp_path, interactions, fault, says):
    output = tmp_path / "dataset"
    started = time.monotonic()
    done = ingest_with(
        INJECT, fault, "--interactions", str(interactions), "--output", str(output), "--direct_num_workers=2"
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-3000:]
    assert says in done.stderr, done.stderr[-3000:]
    assert not output.exists(), "a failed run published a dataset"
    assert not list(tmp_path.glob(f".dataset{STAGING}*")), "the unfinished output was left behind"
    print(f"{fault}: exit {done.returncode} after {took:.1f} s")


BUG_IN_THE_JOB = """
import sys
from transforms import buckets

def broken_order_key(value):
    raise ValueError("injected: a bug in the job, not bad input")

buckets.id_order_key = broken_order_key
from pipeline.main import main

sys.exit(main(sys.argv[1:]))
"""


def test_a_value_error_inside_the_job_is_a_failure_of_the_job_not_bad_input(tmp_path, interactions):
    """Exit 2 means "bad flags or input, nothing ran"; a ValueError raised by the job's own code (here
    in the in-process worker, where Beam keeps the exception's type) is exit 1 with its traceback."""
    output = tmp_path / "dataset"
    done = ingest_with(
        BUG_IN_THE_JOB, "--interactions", str(interactions), "--output", str(output), *IN_PROCESS
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "JobFailed: the ingest job failed: ValueError: injected: a bug in the job" in done.stderr
    assert "videorec ingest: error:" not in done.stderr
    assert not output.exists()


DISK_FULL = """
import errno, os, sys
from transforms import storage

real = storage.atomic_writer

def full_disk(path):
    if "/train/" in path or "/items/" in path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return real(path)

storage.atomic_writer = full_disk
from pipeline.main import main

sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_on_the_output_ends_with_one_line_and_publishes_nothing(tmp_path, interactions):
    """The shard writer's disk is full (injected in the in-process worker, where the patch applies):
    the run ends with one line naming the cause, exit 1, not with the exception (Beam may log the
    worker's error above it)."""
    output = tmp_path / "dataset"
    done = ingest_with(DISK_FULL, "--interactions", str(interactions), "--output", str(output), *IN_PROCESS)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("videorec ingest: error: no space left on a disk the run writes to")
    assert not output.exists()
