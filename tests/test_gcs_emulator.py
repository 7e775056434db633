"""The GCS emulator fixture itself: real API round trips on 127.0.0.1."""

import pytest

pytestmark = pytest.mark.gcs


def test_emulator_round_trip(gcs_emulator):
    bucket = gcs_emulator.make_bucket("fixture-check")
    bucket.blob("a/b.txt").upload_from_string(b"hello")
    assert bucket.blob("a/b.txt").download_as_bytes() == b"hello"
    assert [b.name for b in gcs_emulator.client().list_blobs("fixture-check", prefix="a/")] == ["a/b.txt"]
