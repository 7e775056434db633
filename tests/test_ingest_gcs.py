"""The whole ingest job with gs:// inputs and outputs, against a real GCS API emulator on 127.0.0.1."""

from __future__ import annotations

import json
import time

import pytest
import webdataset as wds

from pipeline.inspect import verify_dataset
from pipeline.main import run
from pipeline.synth import SynthConfig, generate
from transforms import storage

pytestmark = pytest.mark.gcs


def test_ingest_reads_and_writes_gcs(gcs_emulator, tmp_path):
    synth = tmp_path / "synth"
    generate(
        synth,
        SynthConfig(
            users=12, items=8, seed=3, max_interactions=8, max_seconds=1.0, min_seconds=1.0, missing_videos=1
        ),
        workers=2,
    )
    bucket = gcs_emulator.make_bucket("videorec-ingest")
    for path in [synth / "pairs.csv", synth / "titles.csv", *sorted((synth / "videos").iterdir())]:
        bucket.blob(f"in/{path.relative_to(synth)}").upload_from_filename(str(path))

    started = time.monotonic()
    result = run(
        [
            "--interactions=gs://videorec-ingest/in/pairs.csv",
            "--videos=gs://videorec-ingest/in/videos",
            "--titles=gs://videorec-ingest/in/titles.csv",
            "--output=gs://videorec-ingest/out/v1",
            "--frame-size=32",
            "--direct_running_mode=in_memory",
            "--direct_num_workers=1",
            "--quiet",
        ]
    )
    assert time.monotonic() - started < 60  # no credential-lookup stalls against the emulator

    names = {blob.name for blob in gcs_emulator.client().list_blobs("videorec-ingest", prefix="out/v1/")}
    assert "out/v1/manifest.json" in names and not any("/_work/" in name for name in names)
    manifest = json.loads(bucket.blob("out/v1/manifest.json").download_as_bytes())
    assert manifest == result.manifest and manifest["has_frames"]
    assert manifest["counts"]["items_failed"] == {"not_found": 1}
    assert verify_dataset("gs://videorec-ingest/out/v1") == []

    def first_shard(kind: str) -> list[dict]:
        path = manifest["shards"][kind][0]["path"]
        local = tmp_path / path.replace("/", "-")  # keeps .tar or .tar.gz
        local.write_bytes(storage.read_whole_file("gs://videorec-ingest/out/v1/" + path))
        return list(wds.WebDataset(str(local), shardshuffle=False))

    windows = first_shard("train")  # the default layout: JSON windows; frames in the item shards
    assert windows and all(set(s) - {"__key__", "__url__", "__local_path__"} == {"json"} for s in windows)
    items = first_shard("items")
    assert items and all(any(k.endswith(".jpg") for k in s) for s in items)
