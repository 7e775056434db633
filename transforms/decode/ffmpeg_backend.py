"""ffmpeg CLI backend: the ffmpeg program decodes, the same window rule picks, the same renderer converts.

There is no ffprobe beside imageio-ffmpeg, so the container is probed with PyAV (headers only). Each
ffmpeg run (command line built with ffmpeg-python) seeks with ``-ss`` before ``-i`` (keyframe seek +
exact trim), keeps timestamps (``-copyts``), decodes a bounded run of frames in the stream's native
pixel format, and reports every frame's exact timestamp, rotation and colour space through the
``showinfo`` filter; the raw frames come back as a NUT stream on stdout. The window is located in that
run by :func:`transforms.decode.sampling_window.locate_window`, seeking earlier or reading further as needed;
a false or missing duration decodes the whole stream once for its timeline (``fallback``).

Frames then go through the PyAV backend's converter, so both backends give the same output for the
same decoded pixels. Remote (``gs://``) videos are copied to a temporary file first: the ffmpeg CLI
cannot read Beam filesystems.
"""

from __future__ import annotations

import io
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import ffmpeg

from transforms.decode.container import (
    DecodedWindow,
    VideoInfo,
    open_source,
    open_video_stream,
    probe,
    to_frame_sample,
)
from transforms.decode.frame_render import frame_to_rgb, jpeg_renderer
from transforms.decode.sampling_window import (
    NeedEarlierFrames,
    NeedLaterFrames,
    choose_window,
    claimed_middle,
    decoded_end,
    is_increasing,
    locate_window,
)
from transforms.decode.types import FrameSample, SamplerConfig, VideoError
from transforms.decode.video_source import CountingReader, is_local, local_path

ATTEMPTS = 6
REORDER_SLACK = 4
# Raw frames one bounded ffmpeg run may hand back through memory.
RAW_OUTPUT_BUDGET_BYTES = 512 * 2**20
_SHOWINFO_CONFIG = re.compile(r"config in time_base: (\d+)/(\d+)")
_SHOWINFO_FRAME = re.compile(r"\] n:\s*\d+ pts:\s*(-?\d+) .*?duration:\s*(-?\d+)")
_SHOWINFO_ROTATION = re.compile(r"displaymatrix: rotation of (-?[\d.]+) degrees")
_SHOWINFO_COLOR = re.compile(r"color_range:(\w+) color_space:([\w-]+)")

# libavutil's names (av_color_space_name / av_color_range_name) -> enum values.
COLORSPACES = {
    "gbr": 0, "bt709": 1, "unknown": 2, "fcc": 4, "bt470bg": 5, "smpte170m": 6, "smpte240m": 7,
    "ycgco": 8, "bt2020nc": 9, "bt2020c": 10, "smpte2085": 11, "chroma-derived-nc": 12,
    "chroma-derived-c": 13, "ictcp": 14,
}  # fmt: skip
COLOR_RANGES = {"unknown": 0, "tv": 1, "pc": 2}


def find_ffmpeg() -> str:
    """The ffmpeg program: ``$FFMPEG_BINARY``, else ``ffmpeg`` on PATH, else imageio-ffmpeg's binary."""
    configured = os.environ.get("FFMPEG_BINARY")
    if configured:
        return configured
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError(
            "no ffmpeg: set FFMPEG_BINARY, put ffmpeg on PATH or pip install imageio-ffmpeg"
        ) from None
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class FfmpegRun:
    """What one ffmpeg run decoded: frames (native format) and, per frame, time, duration, tags."""

    frames: list[av.VideoFrame] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    rotation: int = 0
    colors: list[tuple[str, str]] = field(default_factory=list)


def parse_showinfo(log: str) -> FfmpegRun:
    """Frame timestamps (exact, from integer pts and the filter time base), rotation and colour tags."""
    run = FfmpegRun()
    time_base = Fraction(1, 1)
    for line in log.splitlines():
        if match := _SHOWINFO_CONFIG.search(line):
            time_base = Fraction(int(match[1]), int(match[2]) or 1)
        elif match := _SHOWINFO_FRAME.search(line):
            run.times.append(float(int(match[1]) * time_base))
            run.durations.append(float(int(match[2]) * time_base))
        elif match := _SHOWINFO_ROTATION.search(line):
            run.rotation = int(round(float(match[1]) / 90.0)) * 90 % 360
        elif match := _SHOWINFO_COLOR.search(line):
            run.colors.append((match[1], match[2]))
    return run


def _command(binary: str, path: str, info: VideoInfo, seek_s, max_frames, threads: int, frame_range):
    """The ffmpeg command line (built with ffmpeg-python) for :func:`run_ffmpeg`."""
    input_options = {"noautorotate": None, "nostdin": None, "hide_banner": None, "threads": threads}
    if seek_s is not None:
        input_options["ss"] = f"{seek_s:.6f}"
    video = ffmpeg.input(path, **input_options)[str(info.stream_index)]
    if frame_range is not None:
        video = video.filter("select", f"between(n,{frame_range[0]},{frame_range[1]})")
    video = video.filter("showinfo")
    if max_frames is None:
        output = video.output("-", format="null", copyts=None, fps_mode="passthrough")
    else:
        output = video.output(
            "pipe:1",
            format="nut",
            vcodec="rawvideo",
            copyts=None,
            fps_mode="passthrough",
            **{"frames:v": max_frames},
        )
    return output.compile(cmd=binary)


def _read_raw_frames(nut: bytes) -> list[av.VideoFrame]:
    """The raw frames of ffmpeg's NUT output (what could be read, if ffmpeg stopped mid-stream)."""
    frames = []
    try:
        with av.open(io.BytesIO(nut), format="nut") as raw:
            for frame in raw.decode(video=0):
                frames.append(frame)
    except av.error.FFmpegError:
        pass
    return frames


def run_ffmpeg(
    path: str,
    info: VideoInfo,
    seek_s: float | None,
    max_frames: int | None,
    config,
    deadline,
    frame_range: tuple[int, int] | None = None,
) -> FfmpegRun:
    """Decode from ``seek_s`` (None: the start) up to ``max_frames`` frames.

    ``max_frames=None`` decodes the whole stream for its timeline only, keeping no frames;
    ``frame_range=(first, last)`` keeps only the frames at those decode-output positions.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise VideoError("timeout", f"{path}: decoding took longer than {config.timeout_s:g} s")
    args = _command(find_ffmpeg(), path, info, seek_s, max_frames, config.threads, frame_range)
    try:
        done = subprocess.run(args, capture_output=True, timeout=remaining, check=False)
    except subprocess.TimeoutExpired:
        raise VideoError("timeout", f"{path}: ffmpeg took longer than {config.timeout_s:g} s") from None
    log = done.stderr.decode("utf-8", "replace")
    run = parse_showinfo(log)
    if max_frames is not None and done.stdout:
        run.frames = _read_raw_frames(done.stdout)
    run.times = run.times[: len(run.frames)] if max_frames is not None else run.times
    if done.returncode != 0 and not run.times:
        last = log.strip().splitlines()[-1] if log.strip() else f"exit code {done.returncode}"
        raise VideoError("corrupt", f"{path}: ffmpeg could not decode the video: {last}")
    for frame, (color_range, color_space) in zip(run.frames, run.colors, strict=False):
        frame.colorspace = COLORSPACES.get(color_space, 2)
        frame.color_range = COLOR_RANGES.get(color_range, 0)
    return run


def _raw_frame_bytes(info: VideoInfo) -> int:
    """Upper bound of one raw frame's size (three full planes of up to 16-bit samples)."""
    return info.coded_width * info.coded_height * 3 * 2


def _window_by_seeking(
    path: str, info: VideoInfo, config: SamplerConfig, deadline, convert
) -> DecodedWindow | None:
    """The window from bounded runs around the claimed middle; None when the claim cannot be trusted."""
    middle = claimed_middle(info.start_s, info.duration_s)
    if middle is None:
        return None
    n, s = config.num_frames, config.stride
    interval = info.frame_interval
    lookback = (s * (n // 2) + 2) * interval
    seek_to = middle - lookback
    frames_after = s * (n - n // 2) + REORDER_SLACK
    decoded = 0
    for attempt in range(ATTEMPTS):
        at_beginning = seek_to <= info.start_s
        max_frames = int((middle - max(seek_to, info.start_s)) / interval) + 1 + frames_after
        if max_frames * _raw_frame_bytes(info) > RAW_OUTPUT_BUDGET_BYTES:
            return None  # too many raw frames to hold: find the window from the timeline instead
        run = run_ffmpeg(path, info, None if at_beginning else seek_to, max_frames, config, deadline)
        decoded += len(run.frames)
        if not run.times:
            if at_beginning:
                return None
            seek_to -= lookback * 2 ** (attempt + 1)
            continue
        if not is_increasing(run.times):
            return None
        reaches_end = len(run.frames) < max_frames
        if reaches_end and middle >= decoded_end(run.times, run.durations[len(run.times) - 1]):
            return None
        try:
            positions = locate_window(
                run.times, middle, n, s, starts_at_beginning=at_beginning, reaches_end=reaches_end
            )
        except NeedEarlierFrames:
            seek_to = min(seek_to, run.times[0]) - lookback * 2 ** (attempt + 1)
            continue
        except NeedLaterFrames:
            frames_after *= 4
            continue
        padded = len(positions) > 1 and positions[-1] == positions[-2]
        return _window(run, positions, info, convert, padded, False, "seek", decoded)
    return None


def _window_from_timeline(
    path: str, info: VideoInfo, config: SamplerConfig, deadline, convert
) -> DecodedWindow:
    """Decode the whole stream once for its timeline, choose, then decode again keeping the chosen run.

    The second pass selects frames by position from the start: a timestamp seek cannot be trusted in
    files without an index (MPEG-TS lands between keyframes).
    """
    timeline = run_ffmpeg(path, info, None, None, config, deadline)
    if not timeline.times:
        raise VideoError("corrupt", f"{path}: no frame of the {info.codec} stream decodes")
    window = choose_window(
        timeline.times,
        timeline.durations[-1],
        info.start_s,
        info.duration_s,
        config.num_frames,
        config.stride,
    )
    first, last = min(window.indices), max(window.indices)
    run = run_ffmpeg(path, info, None, last - first + 1, config, deadline, frame_range=(first, last))
    if run.times != timeline.times[first : last + 1]:
        raise VideoError("corrupt", f"{path}: ffmpeg decodes the chosen frames differently on a second pass")
    positions = tuple(i - first for i in window.indices)
    return _window(
        run,
        positions,
        info,
        convert,
        window.padded,
        window.fallback,
        "linear",
        len(timeline.times) + len(run.frames),
    )


def _window(run: FfmpegRun, positions, info, convert, padded, fallback, path_name, decoded) -> DecodedWindow:
    converted = {p: convert(run.frames[p], run.rotation, info) for p in sorted(set(positions))}
    return DecodedWindow(
        frames=[converted[p] for p in positions],
        times=[run.times[p] for p in positions],
        info=info,
        rotation=run.rotation,
        padded=padded,
        fallback=fallback,
        index_timing=False,
        path=path_name,
        frames_decoded=decoded,
    )


def decode_window_ffmpeg(
    uri: str,
    config: SamplerConfig,
    convert: Callable[[av.VideoFrame, int, VideoInfo], Any] | None = None,
    source: CountingReader | None = None,
    path: str | None = None,
) -> DecodedWindow:
    """The chosen frames of a local video, decoded by the ffmpeg CLI, each passed through ``convert``
    (default: full-size upright RGB, as :func:`transforms.decode.pyav_backend.decode_window_pyav`)."""
    deadline = time.monotonic() + config.timeout_s
    own_source = source is None
    if own_source:
        source = open_source(uri)
    try:
        container, stream = open_video_stream(source, uri, config)
        with container:
            info = probe(container, stream, uri, config)
    finally:
        if own_source:
            source.close()
    path = path or local_path(uri)
    convert = convert or frame_to_rgb
    window = _window_by_seeking(path, info, config, deadline, convert)
    return window or _window_from_timeline(path, info, config, deadline, convert)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sample_with_ffmpeg(uri: str, config: SamplerConfig) -> FrameSample:
    started = (time.monotonic(), time.process_time())
    children_cpu = _children_cpu_s()
    render = jpeg_renderer(config)
    with open_source(uri) as source:
        if is_local(uri):
            window = decode_window_ffmpeg(uri, config, render, source)
        else:
            with tempfile.NamedTemporaryFile(suffix=os.path.splitext(uri)[1]) as copy:
                source.seek(0)
                shutil.copyfileobj(source, copy)
                copy.flush()
                window = decode_window_ffmpeg(uri, config, render, source, copy.name)
        sample = to_frame_sample(window, config, source, started)
    timing = sample.meta["timing"]
    timing["cpu_s"] = round(timing["cpu_s"] + _children_cpu_s() - children_cpu, 6)
    return sample
