"""PyAV backend: decode only what the sampling window needs, exactly as a full decode would show it.

Fast path ("seek"):
  1. Seek to the keyframe before the window and demux (no decoding) until enough frames past the
     middle; the packets' presentation times say where the window is, by the same rule as
     :func:`transforms.decode.sampling_window.choose_window`.
  2. Decode from that keyframe with ``skip_frame = "NONREF"`` for packets shown outside the window
     (nothing references them, so the window decodes bit-exactly) and ``"DEFAULT"`` for the window.
  3. Check that the decoder showed exactly the frames the packets promised; if a seek overshot
     (MPEG-TS) or landed on leading pictures, seek earlier and repeat.

Slow path ("linear"), for what the fast path cannot trust (false or missing duration, packets
without timestamps, a check that fails): decode everything once to learn the times, choose, decode
again keeping the chosen frames.

Each kept frame is handed to a ``convert`` function the moment the decoder outputs it (JPEG rendering
from :mod:`transforms.decode.frame_render` when sampling, full-size RGB in the exactness tests). Errors
become :class:`transforms.decode.types.VideoError`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from transforms.decode.frame_render import frame_rotation, frame_to_rgb, jpeg_renderer
from transforms.decode.sampling_window import (
    NeedEarlierFrames,
    NeedLaterFrames,
    choose_window,
    claimed_middle,
    decoded_end,
    locate_window,
)
from transforms.decode.types import SAMPLER_VERSION, FrameSample, SamplerConfig, VideoError
from transforms.decode.video_source import CountingReader, open_video

# Packets demuxed past the middle beyond the window, so B-frame reordering cannot hide a window frame.
REORDER_SLACK = 16
SEEK_ATTEMPTS = 6


class _Untrusted(Exception):
    """The fast path cannot be trusted for this stream; use the linear path."""


@dataclass
class VideoInfo:
    """What the container says about the chosen video stream, before decoding."""

    stream_index: int
    codec: str
    container: str
    coded_width: int
    coded_height: int
    sample_aspect: float
    fps: float | None
    start_s: float
    duration_s: float | None
    time_base: Fraction
    pix_fmt: str | None


@dataclass
class DecodedWindow:
    """The chosen frames, each converted by the caller's function the moment the decoder showed it."""

    frames: list[Any]
    times: list[float]
    info: VideoInfo
    rotation: int
    padded: bool
    fallback: bool
    index_timing: bool
    path: str
    frames_decoded: int
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- opening and probing


def open_container(source: io.RawIOBase, uri: str):
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoError("corrupt", f"FFmpeg cannot open the container of {uri}: {exc}") from exc


def mp4_box_overrun(source: io.RawIOBase) -> int | None:
    """Offset of a top-level ISO-BMFF box that claims to run past the end of the file, if any."""
    size = source.seek(0, io.SEEK_END)
    offset = 0
    while offset + 8 <= size:
        source.seek(offset)
        header = source.read(16)
        box_size = int.from_bytes(header[:4], "big")
        if box_size == 1 and len(header) >= 16:
            box_size = int.from_bytes(header[8:16], "big")
        if box_size == 0:
            return None
        if box_size < 8 or offset + box_size > size:
            return offset
        offset += box_size
    return None


def choose_stream(container, source: io.RawIOBase, uri: str):
    """The first video stream that is not cover art."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if "mp4" in container.format.name:
        overrun = mp4_box_overrun(source)
        if overrun is not None:
            raise VideoError(
                "corrupt", f"{uri} is truncated: the MP4 box at byte {overrun} runs past the end"
            )
    kinds = sorted({s.type for s in container.streams}) or ["no streams at all"]
    raise VideoError("no_video_stream", f"{uri} has no video stream (found: {', '.join(kinds)})")


def probe(container, stream, uri: str, config: SamplerConfig) -> VideoInfo:
    ctx = stream.codec_context
    codec_name = ctx.name if ctx is not None else None
    if ctx is None or not codec_name or codec_name == "none":
        raise VideoError("unsupported_codec", f"{uri}: no decoder for this video codec in the bundled FFmpeg")
    width, height = ctx.width, ctx.height
    if width * height > config.max_pixels:
        raise VideoError(
            "too_large", f"{uri}: frames are {width}x{height}, above max_pixels={config.max_pixels}"
        )
    if width <= 0 or height <= 0:
        raise VideoError("corrupt", f"{uri}: the video stream declares no frame size")
    tb = stream.time_base
    start_s = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    duration_s = None
    if stream.duration is not None and stream.duration > 0:
        duration_s = float(stream.duration * tb)
    elif container.duration is not None and container.duration > 0:
        duration_s = container.duration / av.time_base
    rate = stream.average_rate or stream.guessed_rate
    sar = ctx.sample_aspect_ratio
    return VideoInfo(
        stream_index=stream.index,
        codec=codec_name,
        container=container.format.name,
        coded_width=width,
        coded_height=height,
        sample_aspect=float(sar) if sar else 1.0,
        fps=float(rate) if rate else None,
        start_s=start_s,
        duration_s=duration_s,
        time_base=tb,
        pix_fmt=ctx.format.name if ctx.format else None,
    )


def _time_of(pts: int, tb: Fraction) -> float:
    """``float(pts * tb)``, computed without building Fractions (the same correctly rounded value)."""
    return pts * tb.numerator / tb.denominator


# ---------------------------------------------------------------- decoding


class _ErrorCount:
    """Packets the decoder rejected; skipped as the ffmpeg CLI skips them."""

    def __init__(self):
        self.count = 0


def _decode_packet(ctx, packet, errors: _ErrorCount) -> list[av.VideoFrame]:
    try:
        return ctx.decode(packet)
    except av.error.InvalidDataError:
        errors.count += 1
        return []


def _decode_all(container, stream, deadline, errors: _ErrorCount):
    """Every frame of ``stream`` in output order, skipping packets the decoder rejects."""
    ctx = stream.codec_context
    for packet in container.demux(stream):
        deadline.check()
        yield from _decode_packet(ctx, packet, errors)


# ---------------------------------------------------------------- fast path


class _Deadline:
    def __init__(self, uri: str, timeout_s: float):
        self.uri = uri
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise VideoError("timeout", f"{self.uri}: decoding took longer than {self.timeout_s:g} s")


def _frame_interval(info: VideoInfo) -> float:
    if info.fps and 1.0 <= info.fps <= 240.0:
        return 1.0 / info.fps
    return 1.0 / 30


def _demux_run(container, stream, middle_s: float, frames_after: int, at_beginning: bool, deadline):
    """Packets from the keyframe the seek landed on until ``frames_after`` are shown after the middle."""
    packets = []
    after = 0
    reached_end = True
    for packet in container.demux(stream):
        deadline.check()
        if packet.size == 0 and packet.pts is None:
            continue
        if not packets and not at_beginning and not packet.is_keyframe:
            continue
        if packet.pts is None:
            raise _Untrusted("packets without presentation timestamps")
        packets.append(packet)
        if _time_of(packet.pts, stream.time_base) > middle_s:
            after += 1
            if after >= frames_after:
                reached_end = False
                break
    return packets, reached_end


class _Keeper:
    """Converts each chosen frame as soon as the decoder shows it: a damaged stream's decoder may
    still write into a frame's buffer afterwards, and nothing may be read once the container closes."""

    def __init__(self, convert: Callable[[av.VideoFrame, int, VideoInfo], Any], info: VideoInfo):
        self.convert = convert
        self.info = info
        self.rotation: int | None = None

    def __call__(self, frame: av.VideoFrame) -> Any:
        if self.rotation is None:
            self.rotation = frame_rotation(frame)
        return self.convert(frame, self.rotation, self.info)


def _decode_run(
    stream, packets, window_times: list[float], deadline, errors: _ErrorCount, keep: _Keeper
) -> tuple[dict[float, Any], int, list[float]]:
    """Decode ``packets``, keeping the window's frames.

    Non-reference frames shown before or after the window are skipped by the decoder: nothing
    references them, so the window decodes bit-exactly without them. Once the last packet of the
    window is in, the decoder is drained rather than fed later packets (references always come
    before the frames that use them in decode order).
    """
    ctx = stream.codec_context
    tb = stream.time_base
    start, end = window_times[0], window_times[-1]
    wanted = set(window_times)
    kept: dict[float, Any] = {}
    shown: list[float] = []
    decoded = 0

    def take(frames):
        nonlocal decoded
        for frame in frames:
            decoded += 1
            if frame.pts is None:
                raise _Untrusted("decoded frame without timestamp")
            t = _time_of(frame.pts, tb)
            if start <= t <= end:
                shown.append(t)
                if t in wanted:
                    kept[t] = keep(frame)

    in_window = [start <= _time_of(packet.pts, tb) <= end for packet in packets]
    window_packets_left = sum(in_window)
    for packet, shown_in_window in zip(packets, in_window, strict=True):
        deadline.check()
        ctx.skip_frame = "DEFAULT" if shown_in_window else "NONREF"
        take(_decode_packet(ctx, packet, errors))
        window_packets_left -= shown_in_window
        if len(kept) == len(wanted) or window_packets_left == 0:
            break
    if len(kept) < len(wanted):
        # Every window packet is in: drain the decoder instead of decoding later packets.
        take(_decode_packet(ctx, None, errors))
    return kept, decoded, shown


def _seek_window(
    container, stream, info: VideoInfo, config: SamplerConfig, deadline, errors, keep: _Keeper
) -> DecodedWindow:
    middle = claimed_middle(info.start_s, info.duration_s)
    if middle is None:
        raise _Untrusted("no claimed duration")
    n, s = config.num_frames, config.stride
    interval = _frame_interval(info)
    lookback = (s * (n // 2) + 1) * interval
    frames_after = s * (n - n // 2) + REORDER_SLACK
    seek_to = middle - lookback
    decoded_total = 0
    for attempt in range(SEEK_ATTEMPTS):
        at_beginning = seek_to <= info.start_s or attempt == SEEK_ATTEMPTS - 1
        if at_beginning:
            container.seek(0, backward=True, any_frame=False)
        else:
            container.seek(int(seek_to / info.time_base), stream=stream, backward=True, any_frame=False)
        stream.codec_context.flush_buffers()
        packets, reached_end = _demux_run(container, stream, middle, frames_after, at_beginning, deadline)
        if not packets:
            if at_beginning:
                raise _Untrusted("nothing to demux from the start")
            seek_to -= lookback * 2 ** (attempt + 1)
            continue
        times = sorted(_time_of(p.pts, info.time_base) for p in packets)
        if len(set(times)) != len(times):
            raise _Untrusted("duplicate presentation timestamps")
        if reached_end and middle >= decoded_end(times, _time_of(packets[-1].duration or 0, info.time_base)):
            raise _Untrusted("the claimed duration runs past the last frame")
        keyframe_time = _time_of(packets[0].pts, info.time_base)
        try:
            positions = locate_window(
                times, middle, n, s, starts_at_beginning=at_beginning, reaches_end=reached_end
            )
        except NeedEarlierFrames:
            seek_to = min(seek_to, keyframe_time) - lookback * 2 ** (attempt + 1)
            continue
        except NeedLaterFrames:
            frames_after *= 4
            continue
        window_times = [times[p] for p in positions]
        if window_times[0] < keyframe_time and not at_beginning:
            seek_to = keyframe_time - lookback * 2 ** (attempt + 1)
            continue
        kept, decoded, shown = _decode_run(stream, packets, sorted(set(window_times)), deadline, errors, keep)
        decoded_total += decoded
        expected = times[positions[0] : positions[-1] + 1]
        if shown != expected or len(kept) != len(set(window_times)):
            # Only frames missing (leading pictures of an open GOP) can be cured by an earlier seek;
            # frames the packets did not promise, or out of order, mean the timestamps are wrong.
            missing_only = set(shown) < set(expected) and shown == sorted(shown)
            if at_beginning or not missing_only:
                raise _Untrusted("the decoder did not show the frames the packets promised")
            seek_to = min(seek_to, keyframe_time) - lookback * 2 ** (attempt + 1)
            continue
        padded = positions[-1] == positions[-2] if len(positions) > 1 else False
        return DecodedWindow(
            frames=[kept[t] for t in window_times],
            times=window_times,
            info=info,
            rotation=keep.rotation,
            padded=padded,
            fallback=False,
            index_timing=False,
            path="seek",
            frames_decoded=decoded_total,
            extra={"seeks": attempt + 1},
        )
    raise _Untrusted("no seek produced the window")


# ---------------------------------------------------------------- linear path


def _linear_times(container, stream, deadline, errors) -> tuple[list[float], float, int]:
    tb = stream.time_base
    times: list[float] = []
    last_duration = 0.0
    for index, frame in enumerate(_decode_all(container, stream, deadline, errors)):
        deadline.check()
        times.append(_time_of(frame.pts, tb) if frame.pts is not None else float(index))
        last_duration = _time_of(frame.duration or 0, tb)
    return times, last_duration, len(times)


def _linear_window(
    source, info: VideoInfo, config: SamplerConfig, deadline, errors, keep: _Keeper
) -> DecodedWindow:
    """Two fresh linear decodes: the first learns every frame's time, the second keeps the chosen ones."""
    container, stream = open_video_stream(source, deadline.uri, config)
    with container:
        times, last_duration, count = _linear_times(container, stream, deadline, errors)
    if not times:
        raise VideoError(
            "corrupt",
            f"{deadline.uri}: no frame of the {info.codec} stream decodes ({errors.count} packets rejected; "
            "the media data is missing, external or damaged)",
        )
    window = choose_window(
        times, last_duration, info.start_s, info.duration_s, config.num_frames, config.stride
    )
    wanted = set(window.indices)
    kept: dict[int, Any] = {}
    container, stream = open_video_stream(source, deadline.uri, config)
    with container:
        for index, frame in enumerate(_decode_all(container, stream, deadline, _ErrorCount())):
            if index in wanted:
                kept[index] = keep(frame)
                if len(kept) == len(wanted):
                    break
    if len(kept) != len(wanted):
        raise VideoError("corrupt", f"{deadline.uri}: the video decodes differently on a second pass")
    frames = [kept[i] for i in window.indices]
    return DecodedWindow(
        frames=frames,
        times=[times[i] for i in window.indices],
        info=info,
        rotation=keep.rotation,
        padded=window.padded,
        fallback=window.fallback,
        index_timing=window.index_timing,
        path="linear",
        frames_decoded=count + max(window.indices) + 1,
    )


# ---------------------------------------------------------------- orchestration


def _classify_ffmpeg_error(exc: Exception, uri: str) -> VideoError:
    if isinstance(exc, av.error.MemoryError | MemoryError):
        return VideoError("memory", f"{uri}: out of memory while decoding: {exc}")
    if isinstance(exc, av.error.PatchWelcomeError | av.error.DecoderNotFoundError):
        return VideoError("unsupported_codec", f"{uri}: the decoder does not support this stream: {exc}")
    return VideoError("corrupt", f"{uri}: decoding failed: {exc}")


def open_video_stream(source: CountingReader, uri: str, config: SamplerConfig):
    """A freshly opened container and its video stream, set up for decoding (other streams discarded)."""
    source.seek(0)
    container = open_container(source, uri)
    try:
        stream = choose_stream(container, source, uri)
    except VideoError:
        container.close()
        raise
    if stream.codec_context is None:
        container.close()
        raise VideoError("unsupported_codec", f"{uri}: the bundled FFmpeg has no decoder for its video codec")
    if config.threads > 1:
        stream.thread_type = "AUTO"
    stream.codec_context.thread_count = config.threads
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all
    return container, stream


def _decode_window(source: CountingReader, uri: str, config: SamplerConfig, convert) -> DecodedWindow:
    deadline = _Deadline(uri, config.timeout_s)
    errors = _ErrorCount()
    container, stream = open_video_stream(source, uri, config)
    with container:
        info = probe(container, stream, uri, config)
        keep = _Keeper(convert, info)
        try:
            window = _seek_window(container, stream, info, config, deadline, errors, keep)
        except _Untrusted as reason:
            window = None
            linear_because = str(reason)
    if window is None:
        window = _linear_window(source, info, config, deadline, errors, keep)
        window.extra["linear_because"] = linear_because
    window.extra["rejected_packets"] = errors.count
    return window


def decode_window(
    uri: str,
    config: SamplerConfig,
    convert: Callable[[av.VideoFrame, int, VideoInfo], Any] | None = None,
    source: CountingReader | None = None,
) -> DecodedWindow:
    """The chosen frames of ``uri``, each passed through ``convert(frame, rotation, info)``.

    The default ``convert`` gives full-size upright RGB arrays (what the exactness tests compare).

    Raises:
        VideoError: the video cannot be sampled.
    """
    own_source = source is None
    if own_source:
        source = open_source(uri)
    try:
        return _decode_window(source, uri, config, convert or frame_to_rgb)
    except VideoError:
        raise
    except (av.error.FFmpegError, MemoryError) as exc:
        raise _classify_ffmpeg_error(exc, uri) from exc
    finally:
        if own_source:
            source.close()


def open_source(uri: str) -> CountingReader:
    """``open_video`` with a missing or unreadable file reported as ``not_found``."""
    try:
        return open_video(uri)
    except FileNotFoundError as exc:
        raise VideoError("not_found", str(exc)) from exc
    except OSError as exc:
        raise VideoError("not_found", f"cannot read {uri}: {exc}") from exc


def to_frame_sample(
    window: DecodedWindow, config: SamplerConfig, source: CountingReader, started
) -> FrameSample:
    """Render a decoded window into JPEGs and the metadata record."""
    info = window.info
    display_w = round(info.coded_width * info.sample_aspect)
    display_h = info.coded_height
    if window.rotation in (90, 270):
        display_w, display_h = display_h, display_w
    wall0, cpu0 = started
    meta = {
        "codec": info.codec,
        "container": info.container,
        "pix_fmt": info.pix_fmt,
        "coded_width": info.coded_width,
        "coded_height": info.coded_height,
        "width": display_w,
        "height": display_h,
        "rotation": window.rotation,
        "fps": info.fps,
        "duration_s": info.duration_s,
        "start_s": info.start_s,
        "pts_s": [round(t, 6) for t in window.times],
        "frames_decoded": window.frames_decoded,
        "padded": window.padded,
        "fallback": window.fallback,
        "index_timing": window.index_timing,
        "decode_path": window.path,
        "backend": config.backend,
        "decode_notes": dict(sorted(window.extra.items())),
        "sampler_version": SAMPLER_VERSION,
        "config_hash": config.config_hash(),
        "bytes_read": source.bytes_read,
        "file_size": source.size,
        "timing": {
            "cpu_s": round(time.process_time() - cpu0, 6),
            "wall_s": round(time.monotonic() - wall0, 6),
        },
    }
    return FrameSample(frames=list(window.frames), meta=meta)


def sample_with_pyav(uri: str, config: SamplerConfig) -> FrameSample:
    started = (time.monotonic(), time.process_time())
    with open_source(uri) as source:
        window = decode_window(uri, config, jpeg_renderer(config), source)
        return to_frame_sample(window, config, source, started)
