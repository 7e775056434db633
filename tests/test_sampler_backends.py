"""The PyAV and ffmpeg-CLI backends choose the same frames and give the same pixels."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_sampler_exact import decodable_files
from transforms.decode.ffmpeg_backend import decode_window_ffmpeg, find_ffmpeg
from transforms.decode.pyav_backend import decode_window_pyav
from transforms.decode.sampler import sample_video
from transforms.decode.types import SamplerConfig

pytestmark = pytest.mark.shared_data

# AVI files whose packets carry no presentation times: PyAV reports the decoder's raw (reordered)
# timestamps and the sampler falls back to index timing, while ffmpeg invents its own timestamps.
TIMESTAMPLESS = {"mediabunny__avc-aac.avi", "mmaction2__test.avi"}


def assert_backends_agree(path, config: SamplerConfig) -> None:
    by_pyav = decode_window_pyav(str(path), config)
    by_ffmpeg = decode_window_ffmpeg(str(path), config)
    assert [round(t, 6) for t in by_ffmpeg.times] == [round(t, 6) for t in by_pyav.times], path.name
    assert by_ffmpeg.rotation == by_pyav.rotation, path.name
    for k, (a, b) in enumerate(zip(by_pyav.frames, by_ffmpeg.frames, strict=True)):
        assert np.array_equal(a, b), f"{path.name}: frame {k} differs between backends"


def test_backends_agree_on_the_real_microlens_hevc_files(shared_data):
    files = sorted((shared_data / "videos").glob("microlens50k_*.mp4"))
    assert len(files) == 3
    for path in files:
        assert_backends_agree(path, SamplerConfig())
        pyav = sample_video(str(path), SamplerConfig(backend="pyav"))
        ffmpeg = sample_video(str(path), SamplerConfig(backend="ffmpeg"))
        assert ffmpeg.frames == pyav.frames
        assert ffmpeg.meta["config_hash"] == pyav.meta["config_hash"]


@pytest.mark.slow
def test_backends_agree_on_every_other_decodable_file(shared_data):
    for path in decodable_files(shared_data):
        if path.name in TIMESTAMPLESS or path.name.startswith("microlens50k_"):
            continue
        assert_backends_agree(path, SamplerConfig())


def test_ffmpeg_binary_is_found_and_can_be_overridden(monkeypatch, tmp_path):
    assert find_ffmpeg()
    fake = tmp_path / "my-ffmpeg"
    monkeypatch.setenv("FFMPEG_BINARY", str(fake))
    assert find_ffmpeg() == str(fake)
