"""``storage.atomic_writer`` on ``gs://`` against the real GCS API emulator: a failed write publishes nothing.

A GCS object appears only when its resumable upload is finalised. The writer must cancel the upload
when the body raises, and a process killed mid-write must leave the upload unfinished, so nothing
(not a truncated object) is ever at the final path.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from transforms import storage

pytestmark = pytest.mark.gcs

REPO_ROOT = Path(__file__).resolve().parents[1]
CHUNK = 16 * 1024 * 1024  # Beam's GCS write buffer: one full chunk is sent before the writer closes


def _names(gcs_emulator, bucket: str, prefix: str) -> list[str]:
    return sorted(blob.name for blob in gcs_emulator.client().list_blobs(bucket, prefix=prefix))


def _fail_write(path: str, data: bytes, error_type: type[Exception]) -> None:
    """Write ``data`` then raise ``error`` inside the writer; collect the writer afterwards.

    The exception (and so the writer it references) is dropped and garbage is collected before the
    caller looks: a writer that finalises its upload when collected would publish the object here.
    """
    try:
        with storage.atomic_writer(path) as writer:
            writer.write(data)
            raise error_type("failed mid-way")
    except error_type as caught:
        assert str(caught).strip("'") == "failed mid-way"
    else:
        raise AssertionError("the writer swallowed the exception")
    gc.collect()


def test_complete_write_is_published(gcs_emulator):
    gcs_emulator.make_bucket("atomic-ok")
    sha = storage.write_bytes("gs://atomic-ok/out/a.bin", b"x" * 1000)
    assert storage.read_whole_file("gs://atomic-ok/out/a.bin") == b"x" * 1000
    assert len(sha) == 64


@pytest.mark.parametrize("size", [1000, CHUNK + 1000], ids=["buffered", "one-chunk-sent"])
def test_raise_inside_writer_leaves_nothing(gcs_emulator, size):
    gcs_emulator.make_bucket("atomic-raise")
    path = f"gs://atomic-raise/out/part-{size}.bin"
    _fail_write(path, b"y" * size, RuntimeError)
    assert not storage.path_exists(path)
    assert _names(gcs_emulator, "atomic-raise", "out/") == []


def test_overwrite_that_fails_keeps_the_old_object(gcs_emulator):
    gcs_emulator.make_bucket("atomic-keep")
    path = "gs://atomic-keep/out/manifest.json"
    storage.write_bytes(path, b"old complete")
    _fail_write(path, b"new but cut short", KeyError)
    assert storage.read_whole_file(path) == b"old complete"


def test_killed_writer_process_leaves_nothing(gcs_emulator, tmp_path):
    """A worker killed (SIGKILL) after a chunk went out: no finalised upload, so no object."""
    gcs_emulator.make_bucket("atomic-kill")
    path = "gs://atomic-kill/out/train-000000.tar"
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time
        from transforms import storage

        with storage.atomic_writer({path!r}) as writer:
            writer.write(b"z" * ({CHUNK} + 4096))  # one chunk is uploaded, the rest is buffered
            open({str(ready)!r}, "w").close()
            time.sleep(120)
            writer.write(b"never")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=env)
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), f"writer did not get mid-way (exit {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not storage.path_exists(path)
    assert _names(gcs_emulator, "atomic-kill", "out/") == []
