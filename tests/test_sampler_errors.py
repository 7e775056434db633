"""Error classes that mean what they say: still images, storage errors, sampler bugs, and damaged
streams that a plain PyAV decode loop samples (the sampler must sample them too, with the same frames)."""

from __future__ import annotations

import contextlib
import io
import json
import random
import time

import av
import pytest
from PIL import Image

from benchmarks.fuzz_sampler import compare_case, mutate, plain_decode_loop, reference_window
from pipeline.summary import format_summary
from transforms.decode.isolated_sampler import IsolatedSampler
from transforms.decode.pyav_backend import decode_window_pyav
from transforms.decode.sampler import IO_ATTEMPTS, sample_video
from transforms.decode.types import SamplerConfig, VideoError


def _jpeg(path, size=(48, 32)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="JPEG")
    path.write_bytes(out.getvalue())
    return str(path)


@pytest.mark.parametrize("name", ["photo.jpg", "photo.mp4"])
def test_a_still_image_is_no_video_stream_whatever_its_name(tmp_path, name):
    image = _jpeg(tmp_path / name)
    with pytest.raises(VideoError) as caught:
        sample_video(image, SamplerConfig(size=(16, 16)))
    assert caught.value.kind == "no_video_stream"
    assert "still image" in caught.value.message
    with IsolatedSampler(SamplerConfig(size=(16, 16))) as sampler, pytest.raises(VideoError) as isolated:
        sampler.sample(image)
    assert isolated.value.kind == "no_video_stream"


def test_a_read_error_is_io_error_after_retries_not_not_found_or_corrupt():
    # /proc/self/mem is a regular file whose read at offset 0 fails with EIO: a real I/O error.
    started = time.monotonic()
    with pytest.raises(VideoError) as caught:
        sample_video("/proc/self/mem", SamplerConfig(size=(16, 16)))
    assert caught.value.kind == "io_error"
    assert (
        "Input/output error" in caught.value.message and f"tried {IO_ATTEMPTS} times" in caught.value.message
    )
    assert time.monotonic() - started >= 0.5 + 1.0  # the backoff between the three tries


def test_a_missing_file_or_a_folder_is_not_found_and_not_retried(tmp_path):
    for uri in (tmp_path / "missing.mp4", tmp_path):
        started = time.monotonic()
        with pytest.raises(VideoError) as caught:
            sample_video(str(uri))
        assert caught.value.kind == "not_found" and time.monotonic() - started < 0.5


@pytest.mark.parametrize("uri", ["s3://bucket/a.mp4", "hdfs://host/a.mp4", "https://host/a.mp4"])
def test_a_video_in_a_store_the_decoder_does_not_read_is_not_found_in_one_line(uri):
    with pytest.raises(VideoError) as caught:
        sample_video(uri)
    assert caught.value.kind == "not_found"
    assert (
        caught.value.message == f"cannot open {uri}: videos are read from local paths, file:// or gs:// only"
    )


def test_an_exception_inside_the_sampler_is_internal_error(tmp_path):
    with pytest.raises(VideoError) as caught:
        sample_video(12345)  # a programming error: not a URI
    assert caught.value.kind == "internal_error"
    assert "a bug, not a property of the file" in caught.value.message
    with IsolatedSampler(SamplerConfig(size=(16, 16))) as sampler, pytest.raises(VideoError) as isolated:
        sampler.sample(12345)
    assert isolated.value.kind == "internal_error"


def test_the_summary_shows_internal_errors_apart():
    counts = {
        "items_encoded": 3,
        "items_seen": 5,
        "items_failed": {"internal_error": 1, "corrupt": 1},
        "users_kept": 2,
        "users_seen": 2,
        "users_dropped": {},
        "rows_used": 10,
        "rows_read": 10,
        "rows_dropped": {},
    }
    manifest = {
        "dataset_version": "v",
        "has_frames": True,
        "counts": counts,
        "shards": {"items": [], "train": []},
    }
    summary = format_summary(manifest)
    assert "BUG         1 video(s) failed with internal_error" in summary
    assert "BUG" not in format_summary({**manifest, "counts": {**counts, "items_failed": {"corrupt": 2}}})


def _fuzz_case(shared_data, names: list[str], seed: int, case: int, tmp_path):
    sources = [shared_data / "videos" / name for name in names]
    contents = [path.read_bytes() for path in sources]
    rng = random.Random(seed)
    for _ in range(case + 1):
        index = rng.randrange(len(sources))
        _, data, description = mutate(contents[index], contents[rng.randrange(len(sources))], rng)
    target = tmp_path / f"case{sources[index].suffix}"
    target.write_bytes(data)
    return target, sources[index], description


def _frames_with_one_thread(path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = 0
        for packet in container.demux(stream):
            with contextlib.suppress(av.error.InvalidDataError):
                frames += len(stream.codec_context.decode(packet))
        return frames


@pytest.mark.shared_data
def test_a_damaged_vp9_header_is_sampled_like_a_plain_decode_loop(shared_data, tmp_path):
    # 32 flipped header bits: this VP9 stream decodes only with FFmpeg's default (tile) threading;
    # with one decoder thread every packet is rejected, and the sampler used to call it corrupt.
    names = [
        "libwebm__bbb_480p_vp9_opus_1second.webm",
        "moviepy__big_buck_bunny_432_433.webm",
        "moviepy__no_duration.webm",
    ]
    target, source, description = _fuzz_case(shared_data, names, seed=1, case=35, tmp_path=tmp_path)
    assert source.name == "moviepy__no_duration.webm" and description == "flip 32 header bits"
    config = SamplerConfig(size=(32, 32))
    assert sum(1 for _ in plain_decode_loop(str(target))) >= 20
    assert _frames_with_one_thread(target) == 0
    forced = decode_window_pyav(str(target), SamplerConfig(size=(32, 32), threads=1))  # redone plainly
    answer = compare_case(str(target), str(source), json.dumps(config.to_dict()))
    assert [round(t, 9) for t in forced.times] == answer["reference"]["times"]
    assert "error" not in answer["sampler"]
    assert (answer["sampler"]["times"], answer["sampler"]["digests"]) == (
        answer["reference"]["times"],
        answer["reference"]["digests"],
    )
    assert len(sample_video(str(target), config).frames) == 5
    assert reference_window(str(target), config)["frames"] >= 20
