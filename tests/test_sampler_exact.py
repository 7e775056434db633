"""The sampler's frames equal, pixel for pixel before resizing, the definition applied to a full decode.

The reference here decodes every frame of the file linearly with PyAV (skipping packets FFmpeg
rejects, as the sampler does), applies ``choose_window`` to all presentation times, and decodes a
second time to pick the chosen frames. The sampler under test seeks, skips non-reference frames and
stops early; any difference in the chosen frames or their pixels fails.
"""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest

from transforms.decode.frame_render import frame_rotation, frame_to_rgb
from transforms.decode.pyav_backend import decode_window_pyav
from transforms.decode.sampler import sample_video
from transforms.decode.sampling_window import choose_window
from transforms.decode.types import SamplerConfig, VideoError

pytestmark = pytest.mark.shared_data


def inventory(shared_data: Path) -> list[dict[str, str]]:
    with open(shared_data / "videos" / "INVENTORY.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def decodable_files(shared_data: Path) -> list[Path]:
    """Files PyAV decodes at least one frame of, and that are not broken on purpose."""
    return [
        shared_data / "videos" / row["file"]
        for row in inventory(shared_data)
        if row["intentionally_broken"] == "no"
        and row["pyav18.1_decode_frames"].isdigit()
        and int(row["pyav18.1_decode_frames"]) > 0
    ]


def _decode_every_frame(path: Path):
    container = av.open(str(path))
    stream = next(
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    )
    for packet in container.demux(stream):
        try:
            frames = stream.codec_context.decode(packet)
        except av.error.InvalidDataError:
            continue
        for frame in frames:
            yield frame, stream


def reference_window(path: Path, config: SamplerConfig) -> tuple[list[float], list[np.ndarray]]:
    """Times and upright RGB images of the chosen frames, from two full linear decodes."""
    times, last_duration = [], 0.0
    start_s, duration_s = 0.0, None
    for index, (frame, stream) in enumerate(_decode_every_frame(path)):
        tb = stream.time_base
        times.append(float(frame.pts * tb) if frame.pts is not None else float(index))
        last_duration = float((frame.duration or 0) * tb)
        if index == 0:
            container = stream.container
            start_s = float(stream.start_time * tb) if stream.start_time is not None else 0.0
            if stream.duration:
                duration_s = float(stream.duration * tb)
            elif container.duration:
                duration_s = container.duration / av.time_base
    window = choose_window(times, last_duration, start_s, duration_s, config.num_frames, config.stride)
    chosen = {}
    for index, (frame, _) in enumerate(_decode_every_frame(path)):
        if index in window.indices:
            chosen[index] = frame_to_rgb(frame, frame_rotation(frame))
    return [times[i] for i in window.indices], [chosen[i] for i in window.indices]


def assert_same_as_reference(path: Path, config: SamplerConfig) -> str:
    window = decode_window_pyav(str(path), config)
    ref_times, ref_images = reference_window(path, config)
    assert [round(t, 9) for t in window.times] == [round(t, 9) for t in ref_times], path.name
    for k, (got, expected) in enumerate(zip(window.frames, ref_images, strict=True)):
        assert got.shape == expected.shape, (path.name, k)
        assert np.array_equal(got, expected), f"{path.name}: frame {k} differs from the full decode"
    return window.path


def test_every_decodable_file_matches_a_full_decode(shared_data):
    files = decodable_files(shared_data)
    assert len(files) >= 30
    paths = {path.name: assert_same_as_reference(path, SamplerConfig()) for path in files}
    # The fast path is the one that serves real micro-videos.
    assert all(paths[name] == "seek" for name in paths if name.startswith("microlens"))


@pytest.mark.parametrize("num_frames,stride,threads", [(4, 3, 1), (8, 2, 1), (5, 1, 2)])
def test_other_windows_match_a_full_decode(shared_data, num_frames, stride, threads):
    config = SamplerConfig(num_frames=num_frames, stride=stride, threads=threads)
    for name in [
        "microlens50k_via_sananm__10040.mp4",
        "mediabunny__hevc.ts",
        "torchcodec__var_fps_video.mp4",
        "nwb-video-widgets__stub_mp4v.mp4",
        "mediabunny__cursed-vfr.mp4",
    ]:
        assert_same_as_reference(shared_data / "videos" / name, config)


EXPECTED_OUTCOMES = {
    "laravel-media__audio-only.mov": "no_video_stream",
    "small__Mpeg4_no_streams.mp4": "no_video_stream",
    "mp4ff__init_truncated.mp4": "corrupt",
    "mp4parse-rust__chunk_out_of_range.mp4": "corrupt",
    "photoprism__quicktime-jpeg_refmovie.mov": "corrupt",
    "libwebm__invalid_vp9_bitstream-bug_1416.webm": "too_large",
}


@pytest.mark.parametrize("name,kind", sorted(EXPECTED_OUTCOMES.items()))
def test_broken_files_get_their_error_class(shared_data, name, kind):
    with pytest.raises(VideoError) as caught:
        sample_video(str(shared_data / "videos" / name), SamplerConfig(timeout_s=10))
    assert caught.value.kind == kind
    assert name in caught.value.message


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_unknown_codec_is_unsupported_codec(shared_data, tmp_path, backend):
    """The HEVC sample entry renamed to a fourcc no decoder knows."""
    data = (shared_data / "videos" / "torchcodec__h265_video.mp4").read_bytes()
    patched = tmp_path / "unknown_codec.mp4"
    patched.write_bytes(data.replace(b"hev1", b"zzz9"))
    with pytest.raises(VideoError) as caught:
        sample_video(str(patched), SamplerConfig(backend=backend))
    assert caught.value.kind == "unsupported_codec"
    assert str(patched) in caught.value.message


def test_truncated_file_falls_back_to_the_middle_of_what_decodes(shared_data):
    sample = sample_video(str(shared_data / "videos" / "mediabunny__annex-b_truncated.mp4"))
    assert sample.meta["fallback"] is True
    assert len(sample.frames) == 5
    assert max(sample.meta["pts_s"]) < 1.0  # the header claims 35 s; 6 frames (0.5 s) exist
    # The last of the 6 frames is cut off mid-picture: its undecoded area is whatever the buffer held
    # before, so pixel equality is checked on a 3-frame window that ends before it.
    assert_same_as_reference(
        shared_data / "videos" / "mediabunny__annex-b_truncated.mp4", SamplerConfig(num_frames=3)
    )


def test_damaged_packet_outside_the_window_is_tolerated(shared_data):
    """decord's corrupted.mp4: one packet FFmpeg rejects (at 3.0 s); the middle (2.5 s) is intact."""
    sample = sample_video(str(shared_data / "videos" / "decord__corrupted.mp4"))
    assert sample.meta["pts_s"] == [2.3, 2.4, 2.5, 2.6, 2.7]


def test_inventory_is_fully_covered(shared_data):
    names = {row["file"] for row in inventory(shared_data)}
    covered = {p.name for p in decodable_files(shared_data)} | set(EXPECTED_OUTCOMES)
    covered |= {"mediabunny__annex-b_truncated.mp4", "decord__corrupted.mp4"}
    assert names == covered
