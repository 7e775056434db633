"""The frame sampler's process starts clean inside a Beam worker: no Beam, no gRPC, no worker site.

A local ingest's SDK workers run with Beam's worker variables and ``pipeline/worker_site`` on
``PYTHONPATH`` (pipeline/local_runner.py). The sampler process they start must not inherit them:
the worker site would load Beam's SDK worker and gRPC into every sampler, counted against
``--decode-max-memory-mb``. Measured here on real processes (/proc), against a plain interpreter that
imports the decoder.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.local_runner import WORKER_SITE, worker_environment
from transforms.decode.isolated_sampler import BEAM_WORKER_VARIABLES, IsolatedSampler, sampler_environment


def as_a_beam_worker(monkeypatch) -> None:
    """This process's environment as a local SDK worker of an ingest has it."""
    for name, value in worker_environment("2.78.0").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONTROL_API_SERVICE_DESCRIPTOR", "url: 'localhost:1'")
    monkeypatch.setenv("LOGGING_API_SERVICE_DESCRIPTOR", "url: 'localhost:2'")
    monkeypatch.setenv("PIPELINE_OPTIONS", "{}")
    monkeypatch.setenv("WORKER_ID", "worker_1")


def mapped_files(pid: int) -> set[str]:
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split(None, 5)[5] for line in lines if len(line.split(None, 5)) == 6}


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_the_sampler_environment_drops_beams_worker_variables_and_the_worker_site(monkeypatch):
    as_a_beam_worker(monkeypatch)
    monkeypatch.setenv("PYTHONPATH", f"{WORKER_SITE}:/opt/user-libs")
    env = sampler_environment(dict(os.environ), package_root="/repo")
    assert env["PYTHONPATH"] == "/repo:/opt/user-libs"
    assert not set(BEAM_WORKER_VARIABLES) & set(env)
    assert env["MALLOC_ARENA_MAX"] == "2", "other variables pass through"


def started_sampler() -> tuple[set[str], int]:
    """The files mapped by a freshly started sampler process, and its RSS in kB, once it is ready."""
    with IsolatedSampler() as sampler:
        return mapped_files(sampler.worker_pid), rss_kb(sampler.worker_pid)


def test_a_sampler_started_in_a_beam_worker_loads_no_beam_and_no_grpc(monkeypatch):
    """Against the same sampler started from a plain interpreter's environment (it imports the
    decoder: PyAV, FFmpeg, NumPy)."""
    for name in (*BEAM_WORKER_VARIABLES, "PYTHONPATH"):
        monkeypatch.delenv(name, raising=False)
    _, plain_kb = started_sampler()
    as_a_beam_worker(monkeypatch)
    loaded, in_worker_kb = started_sampler()
    assert not [f for f in loaded if "apache_beam" in f or "grpc" in f], "the sampler imported Beam or gRPC"
    print(
        f"sampler at start: {in_worker_kb / 1024:.1f} MB RSS inside a Beam worker, "
        f"{plain_kb / 1024:.1f} MB from a plain interpreter"
    )
    # The worker site made it load Beam's SDK worker and gRPC: about 90-125 MB more, before the fix.
    assert in_worker_kb < plain_kb + 15 * 1024
