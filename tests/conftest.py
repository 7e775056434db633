"""Shared fixtures: the real third-party data folder and a local GCS API emulator."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real third-party videos and logs); skips when a clone lacks it."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real test data not present at {SHARED_DATA} (only on the project's own machines)")
    return SHARED_DATA


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class GcsEmulator:
    """A running gcp-storage-emulator; ``STORAGE_EMULATOR_HOST`` points at it while the session lasts."""

    host: str
    project: str = "test-project"

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=self.project, credentials=AnonymousCredentials())

    def make_bucket(self, name: str):
        client = self.client()
        bucket = client.bucket(name)
        if not bucket.exists():
            bucket = client.create_bucket(name)
        return bucket


@pytest.fixture(scope="session")
def gcs_emulator():
    """Start ``gcp-storage-emulator`` on 127.0.0.1 for the test session.

    Exported for code under test (and for Beam workers started from it):
    ``STORAGE_EMULATOR_HOST`` so google-cloud-storage talks to the emulator, and
    ``NO_GCE_CHECK=True`` so google-auth does not probe the GCE metadata server
    (the ~25 s stall the brief describes); production code paths stay unchanged.
    """
    port = _free_port()
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("gcp-storage-emulator did not start") from None
            time.sleep(0.1)
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK", "GOOGLE_CLOUD_PROJECT")}
    os.environ.update(STORAGE_EMULATOR_HOST=host, NO_GCE_CHECK="True", GOOGLE_CLOUD_PROJECT="test-project")
    try:
        yield GcsEmulator(host=host)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """12 users, 8 one-second videos, every video present and sound (read-only: tests copy what they change)."""
    from pipeline.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    generate(
        out,
        SynthConfig(users=12, items=8, seed=3, max_interactions=8, min_seconds=1, max_seconds=1),
        workers=2,
    )
    return out


SMALL_VIDEOS = dict(
    max_interactions=8, min_seconds=1.0, max_seconds=1.0, sizes=((64, 64),), hevc_fraction=0.0
)
"""One-second 64x64 H.264 synth videos: quick to decode."""


@pytest.fixture(scope="session")
def synth16(tmp_path_factory) -> Path:
    """30 users, 16 items with one-second 64x64 videos (read-only: tests copy what they change)."""
    from pipeline.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth16")
    generate(out, SynthConfig(users=30, items=16, seed=21, **SMALL_VIDEOS), workers=2)
    return out


@pytest.fixture(scope="session")
def donor_videos(tmp_path_factory) -> Path:
    """Three more videos (``videos/1.mp4`` ... ``3.mp4``) for the items a nightly run adds or changes."""
    from pipeline.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("donor")
    generate(
        out,
        SynthConfig(users=3, items=3, categories=2, min_interactions=3, seed=5, **SMALL_VIDEOS),
        workers=2,
    )
    return out
