"""Video fingerprints and decode plans (transforms/fingerprint.py) on real files and the GCS emulator."""

from __future__ import annotations

import os
import shutil

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.decode.types import SamplerConfig
from transforms.fingerprint import (
    FingerprintVideos,
    PreviousItem,
    VideoStat,
    fingerprint,
    fingerprint_video,
    gcs_change_token,
    plan_decodes,
    stat_tree,
    stat_video,
)

SAMPLER = SamplerConfig().config_hash()


def _write(path, data: bytes, mtime_ns: int | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return str(path)


def test_local_fingerprint_changes_with_size_mtime_and_sampler_config(tmp_path):
    uri = _write(tmp_path / "a.mp4", b"video-bytes", mtime_ns=1_700_000_000_123_456_789)
    first = fingerprint_video(uri, SAMPLER)
    assert first.startswith("fp1-")
    assert fingerprint_video(uri, SAMPLER) == first
    assert fingerprint_video(f"file://{uri}", SAMPLER) == first

    copy = _write(tmp_path / "moved" / "a.mp4", b"video-bytes", mtime_ns=1_700_000_000_123_456_789)
    assert fingerprint_video(copy, SAMPLER) == first, "location is not part of the fingerprint"

    os.utime(uri, ns=(1_700_000_000_123_456_790,) * 2)  # touched, 1 ns later
    touched = fingerprint_video(uri, SAMPLER)
    assert touched != first

    _write(tmp_path / "a.mp4", b"video-bytes!", mtime_ns=1_700_000_000_123_456_790)  # same mtime, new size
    assert fingerprint_video(uri, SAMPLER) not in (first, touched)

    other_sampler = SamplerConfig(num_frames=8).config_hash()
    assert other_sampler != SAMPLER
    assert fingerprint_video(uri, other_sampler) != fingerprint_video(uri, SAMPLER)


def test_fingerprint_rejects_missing_videos_and_hashes(tmp_path):
    with pytest.raises(FileNotFoundError):
        stat_video(str(tmp_path / "nope.mp4"))
    with pytest.raises(ValueError, match="sampler_config_hash"):
        fingerprint(VideoStat("x", 1, "mtime_ns=1"), "")
    with pytest.raises(ValueError, match="only local paths and gs://"):
        stat_video("s3://bucket/a.mp4")


def test_real_videos_fingerprint_without_reading_them(shared_data, tmp_path):
    videos = sorted((shared_data / "videos").glob("*"))[:3]
    assert videos, "shared data has no videos"
    for video in videos:
        shutil.copy2(video, tmp_path / video.name)
    stats = list(stat_tree(str(tmp_path)))
    assert [s.size for s in stats] == [v.stat().st_size for v in videos]
    prints = {fingerprint(s, SAMPLER) for s in stats}
    assert len(prints) == len(videos)


def test_stat_tree_lists_a_local_folder_sorted(tmp_path):
    _write(tmp_path / "b" / "2.mp4", b"22")
    _write(tmp_path / "a.mp4", b"1")
    stats = list(stat_tree(str(tmp_path)))
    assert [(os.path.relpath(s.uri, tmp_path), s.size) for s in stats] == [("a.mp4", 1), ("b/2.mp4", 2)]


@pytest.mark.gcs
def test_gcs_fingerprint_uses_the_content_md5(gcs_emulator):
    bucket = gcs_emulator.make_bucket("fingerprint-test")
    client = gcs_emulator.client()
    bucket.blob("videos/1.mp4").upload_from_string(b"first version")
    uri = "gs://fingerprint-test/videos/1.mp4"
    stat = stat_video(uri, client=client)
    assert stat.size == len(b"first version") and stat.change_token.startswith("md5=")
    first = fingerprint(stat, SAMPLER)

    bucket.blob("videos/1.mp4").upload_from_string(b"first version")  # same bytes, new generation
    assert fingerprint_video(uri, SAMPLER, client=client) == first
    bucket.blob("videos/1.mp4").upload_from_string(b"other version")  # same size, new bytes
    assert fingerprint_video(uri, SAMPLER, client=client) != first
    # Without a client argument the module makes its own (anonymous, against the emulator).
    assert fingerprint_video(uri, SAMPLER) == fingerprint_video(uri, SAMPLER, client=client)

    with pytest.raises(FileNotFoundError):
        stat_video("gs://fingerprint-test/videos/none.mp4", client=client)

    bucket.blob("videos/2.mp4").upload_from_string(b"22")
    listed = list(stat_tree("gs://fingerprint-test/videos", client=client))
    assert [(s.uri, s.size) for s in listed] == [(uri, 13), ("gs://fingerprint-test/videos/2.mp4", 2)]
    assert listed[0] == stat_video(uri, client=client)


def test_gcs_objects_without_md5_fall_back_to_their_generation():
    # Real GCS keeps no MD5 for composite objects (the emulator computes one anyway, so this is plain data).
    assert gcs_change_token(None, 1700000000000001) == "generation=1700000000000001"
    assert gcs_change_token("XjlCgd+sgcHn3dyvTTXR9g==", 5) == "md5=XjlCgd+sgcHn3dyvTTXR9g=="


def test_plan_decodes_new_changed_unchanged_failed_and_removed():
    previous = {
        "same": ("fpA", "ok", 1),
        "changed": ("fpB", "ok", 1),
        "failed_once": ("fpC", "decode_error", 1),
        "failed_twice": PreviousItem("fpD", "timeout", 2),
        "failed_then_changed": ("fpE", "decode_error", 3),
        "gone": ("fpF", "ok", 1),
    }
    current = {
        "same": "fpA",
        "changed": "fpB2",
        "failed_once": "fpC",
        "failed_twice": "fpD",
        "failed_then_changed": "fpE2",
        "new": "fpG",
    }
    plan = plan_decodes(previous, current)
    assert plan.to_reuse == ("same",)
    assert plan.to_decode == ("changed", "failed_once", "failed_then_changed", "failed_twice", "new")
    assert plan.reasons == {
        "changed": "changed",
        "failed_once": "retry",
        "failed_then_changed": "changed",
        "failed_twice": "retry",
        "new": "new",
    }
    assert plan.retries == {"failed_once": 2, "failed_twice": 3}
    assert plan.attempts["changed"] == plan.attempts["new"] == plan.attempts["failed_then_changed"] == 1
    assert plan.removed == ("gone",)
    assert plan.given_up == ()

    capped = plan_decodes(previous, current, max_attempts=2)
    assert capped.given_up == ("failed_twice",)
    assert capped.retries == {"failed_once": 2}


def test_plan_decodes_first_run_and_no_change_run():
    current = {f"i{n}": f"fp{n}" for n in range(5)}
    first = plan_decodes({}, current)
    assert first.to_decode == tuple(sorted(current)) and first.to_reuse == ()
    unchanged = plan_decodes({k: (v, "ok", 1) for k, v in current.items()}, current)
    assert unchanged.to_decode == () and unchanged.to_reuse == tuple(sorted(current))


def test_fingerprint_videos_transform_tags_missing_videos(tmp_path):
    present = _write(tmp_path / "v1.mp4", b"abc")
    absent = str(tmp_path / "v2.mp4")
    expected = fingerprint_video(present, SAMPLER)
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    results = pipeline | beam.Create([("1", present), ("2", absent)]) | FingerprintVideos(SAMPLER)
    assert_that(results.fingerprints, equal_to([("1", expected)]), label="fingerprints")
    assert_that(
        results.missing | beam.Map(lambda r: (r["item_id"], r["reason"], r["stage"])),
        equal_to([("2", "not_found", "fingerprint")]),
        label="missing",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["videos_fingerprinted"] == 1 and counters["videos_fingerprint_not_found"] == 1
