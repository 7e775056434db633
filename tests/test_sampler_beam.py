"""SampleMidFrames in a real DirectRunner pipeline, and the sampler reading gs:// through Beam FileSystems."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.byte_counting_proxy import CountingProxy
from transforms.decode.sampler import sample_video
from transforms.decode.types import SamplerConfig
from transforms.sample_frames import SampleMidFrames

MICROLENS = "microlens50k_via_sananm__10040.mp4"


@pytest.mark.shared_data
def test_sample_mid_frames_routes_videos_and_failures(shared_data, tmp_path):
    videos = shared_data / "videos"
    elements = [
        ("item-ok", str(videos / MICROLENS)),
        ("item-rotated", str(videos / "jsonize__iphone_rotated.mov")),
        ("item-missing", str(tmp_path / "gone.mp4")),
        ("item-audio", str(videos / "laravel-media__audio-only.mov")),
    ]
    config = SamplerConfig(size=(64, 64), timeout_s=30)
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    outputs = pipeline | beam.Create(elements) | SampleMidFrames(config)
    assert_that(
        outputs.sampled
        | "SampledSummary" >> beam.Map(lambda kv: (kv[0], len(kv[1].frames), kv[1].meta["codec"])),
        equal_to([("item-ok", 5, "hevc"), ("item-rotated", 5, "h264")]),
        label="Sampled",
    )
    assert_that(
        outputs.failed
        | "FailedSummary" >> beam.Map(lambda f: (f["item_id"], f["stage"], f["reason"], bool(f["message"]))),
        equal_to(
            [("item-missing", "decode", "not_found", True), ("item-audio", "decode", "no_video_stream", True)]
        ),
        label="Failed",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["videos_decoded"] == 2
    assert counters["videos_failed_not_found"] == 1
    assert counters["videos_failed_no_video_stream"] == 1


@pytest.mark.gcs
@pytest.mark.shared_data
def test_gs_uri_reads_only_the_needed_byte_ranges(gcs_emulator, shared_data, monkeypatch):
    # Bytes are counted on the wire, by a proxy in front of the emulator (the upload goes through it
    # too, so the object's media link points at it and no download can bypass the count).
    proxy = CountingProxy.in_front_of(gcs_emulator.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.host)
    bucket = gcs_emulator.make_bucket("sampler-videos")
    local = shared_data / "videos" / MICROLENS
    bucket.blob(f"raw/{MICROLENS}").upload_from_filename(str(local))
    config = SamplerConfig(size=(64, 64))
    proxy.reset()
    remote = sample_video(f"gs://sampler-videos/raw/{MICROLENS}", config)
    downloads = [e for e in proxy.exchanges() if e.media]
    assert remote.meta["bytes_read"] == sum(e.body_bytes for e in downloads) > 0
    # One metadata request on the object (size and generation), plus at most the client's one
    # background lookup of the bucket.
    assert len([e for e in proxy.exchanges() if e.object_call]) == 1
    assert len(proxy.exchanges()) - len(downloads) <= 2
    here = sample_video(str(local), config)
    assert remote.frames == here.frames
    assert remote.meta["file_size"] == local.stat().st_size
    assert remote.meta["bytes_read"] < 0.5 * remote.meta["file_size"]
    assert proxy.errors == []
    with pytest.raises(Exception) as caught:
        sample_video("gs://sampler-videos/raw/absent.mp4", config)
    assert getattr(caught.value, "kind", None) == "not_found"
