"""A hostile video never hangs or crashes the caller: time limit, memory cap, crash, all from outside."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from transforms.decode.isolated_sampler import IsolatedSampler
from transforms.decode.types import SamplerConfig, VideoError


def write_h264_clip(path: Path, width: int, height: int, frames: int, fmt: str | None = None) -> Path:
    """A flat grey H.264 clip (cheap to encode, with a moving corner so frames differ)."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "48"}
        image = np.full((height, width, 3), 128, np.uint8)
        for index in range(frames):
            image[:16, :16] = index * 5 % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def endless_video(tmp_path_factory) -> Path:
    """A raw H.264 stream of ~144,000 frames with no duration anywhere: the sampler must decode it all."""
    folder = tmp_path_factory.mktemp("endless")
    chunk = write_h264_clip(folder / "chunk.h264", 1280, 720, 48, fmt="h264").read_bytes()
    path = folder / "endless.h264"
    with open(path, "wb") as handle:
        for _ in range(3000):
            handle.write(chunk)
    return path


@pytest.fixture(scope="module")
def good_video(tmp_path_factory) -> Path:
    return write_h264_clip(tmp_path_factory.mktemp("good") / "good.mp4", 320, 240, 30)


@pytest.fixture(scope="module")
def huge_video(tmp_path_factory) -> Path:
    """One 8K frame: decoding it needs far more than a 100 MiB cap allows."""
    return write_h264_clip(tmp_path_factory.mktemp("huge") / "huge.mp4", 7680, 4320, 2)


def test_endless_video_is_stopped_by_the_time_limit_and_the_next_video_works(endless_video, good_video):
    with IsolatedSampler(SamplerConfig(timeout_s=2.0)) as sampler:
        first_worker = sampler.worker_pid
        with pytest.raises(VideoError) as caught:
            sampler.sample(str(endless_video))
        assert caught.value.kind == "timeout"
        assert "killed" in caught.value.message
        sample = sampler.sample(str(good_video))
        assert len(sample.frames) == 5
        assert sampler.worker_pid != first_worker
        assert sampler.workers_started == 2


def test_memory_cap_kills_the_worker_and_the_next_video_works(huge_video, good_video):
    with IsolatedSampler(SamplerConfig(max_memory_mb=100, timeout_s=30)) as sampler:
        with pytest.raises(VideoError) as caught:
            sampler.sample(str(huge_video))
        assert caught.value.kind == "memory"
        assert len(sampler.sample(str(good_video)).frames) == 5


def test_a_crashed_worker_is_reported_and_replaced(endless_video, good_video):
    with IsolatedSampler(SamplerConfig(timeout_s=30)) as sampler:
        victim = sampler.worker_pid
        killer = threading.Timer(0.5, os.kill, (victim, signal.SIGSEGV))
        killer.start()
        with pytest.raises(VideoError) as caught:
            sampler.sample(str(endless_video))
        killer.join()
        assert caught.value.kind == "corrupt"
        assert "SIGSEGV" in caught.value.message
        assert len(sampler.sample(str(good_video)).frames) == 5


def test_errors_cross_the_process_boundary_with_their_class(tmp_path, good_video):
    with IsolatedSampler(SamplerConfig()) as sampler:
        with pytest.raises(VideoError) as caught:
            sampler.sample(str(tmp_path / "missing.mp4"))
        assert caught.value.kind == "not_found"
        sample = sampler.sample(str(good_video))
        assert sample.meta["codec"] == "h264"
        assert all(frame[:2] == b"\xff\xd8" for frame in sample.frames)
