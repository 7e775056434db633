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

import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from transforms.decode.container import (
    DecodedWindow,
    VideoInfo,
    open_source,
    open_video_stream,
    probe,
    raise_read_error,
    to_frame_sample,
)
from transforms.decode.frame_render import frame_rotation, frame_to_rgb, jpeg_renderer
from transforms.decode.sampling_window import (
    NeedEarlierFrames,
    NeedLaterFrames,
    choose_window,
    claimed_middle,
    decoded_end,
    locate_window,
)
from transforms.decode.types import FrameSample, SamplerConfig, VideoError
from transforms.decode.video_source import CountingReader

# Packets demuxed past the middle beyond the window, so B-frame reordering cannot hide a window frame.
REORDER_SLACK = 16
SEEK_ATTEMPTS = 6


class _Untrusted(Exception):
    """The fast path cannot be trusted for this stream; use the linear path."""


def _time_of(pts: int, tb: Fraction) -> float:
    """``float(pts * tb)``, computed without building Fractions (the same correctly rounded value)."""
    return pts * tb.numerator / tb.denominator


# ---------------------------------------------------------------- decoding


class _ErrorCount:
    """Signs of damage: packets the decoder rejected (skipped, as the ffmpeg CLI and a plain decode
    loop skip them), frames it flagged corrupt (concealed errors), and a demuxer error that ended
    the stream early (what was read until then is kept)."""

    def __init__(self):
        self.count = 0
        self.corrupt_frames = 0
        self.demux_error: str | None = None

    @property
    def any(self) -> bool:
        return bool(self.count or self.corrupt_frames or self.demux_error)


def _decode_packet(ctx, packet, errors: _ErrorCount) -> list[av.VideoFrame]:
    """The frames the decoder outputs after ``packet``; none when it rejects the packet.

    Any FFmpeg error counts as a rejection (invalid data, "try again" (EAGAIN) or an allocation
    failure (ENOMEM) on a damaged stream): a plain ``for packet in container.demux(): decode``
    loop that skips failing packets samples such files, and so must the sampler.
    """
    try:
        frames = ctx.decode(packet)
    except av.error.FFmpegError:
        errors.count += 1
        return []
    errors.corrupt_frames += sum(frame.is_corrupt for frame in frames)
    return frames


def _decode_all(container, stream, deadline, errors: _ErrorCount):
    """Every frame of ``stream`` in output order, skipping packets the decoder rejects; a demuxer
    error ends the stream there (no drain), as it ends a plain decode loop."""
    ctx = stream.codec_context
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            errors.demux_error = str(exc)
            return
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
    """Two fresh linear decodes: the first learns every frame's time, the second keeps the chosen ones.

    Both decode as a plain PyAV decode loop does (``open_video_stream(plain=True)``: FFmpeg's
    threading, no stream discarded) unless ``config.threads`` forces a thread count; then a first
    pass that shows damage (a rejected packet, a frame flagged corrupt, a demuxer error) is redone
    plainly: how a decoder conceals damage depends on its threading, and the sampler must sample
    what such a loop samples, with the same frames.
    """
    plain = config.threads == 0
    container, stream = open_video_stream(source, deadline.uri, config, plain=plain)
    with container:
        times, last_duration, count = _linear_times(container, stream, deadline, errors)
    if errors.any and not plain:
        plain = True
        errors.count, errors.corrupt_frames, errors.demux_error = 0, 0, None
        container, stream = open_video_stream(source, deadline.uri, config, plain=True)
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
    container, stream = open_video_stream(source, deadline.uri, config, plain=plain)
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
        extra={"demux_error": errors.demux_error} if errors.demux_error else {},
    )


# ---------------------------------------------------------------- orchestration


def _classify_ffmpeg_error(exc: Exception, uri: str) -> VideoError:
    if isinstance(exc, av.error.MemoryError | MemoryError):
        return VideoError("memory", f"{uri}: out of memory while decoding: {exc}")
    if isinstance(exc, av.error.PatchWelcomeError | av.error.DecoderNotFoundError):
        return VideoError("unsupported_codec", f"{uri}: the decoder does not support this stream: {exc}")
    return VideoError("corrupt", f"{uri}: decoding failed: {exc}")


def _decode_window(source: CountingReader, uri: str, config: SamplerConfig, convert) -> DecodedWindow:
    deadline = _Deadline(uri, config.timeout_s)
    errors = _ErrorCount()
    container, stream = open_video_stream(source, uri, config)
    with container:
        info = probe(container, stream, uri, config)
        keep = _Keeper(convert, info)
        try:
            window = _seek_window(container, stream, info, config, deadline, errors, keep)
            if errors.any:
                raise _Untrusted(
                    f"damage near the middle ({errors.count} packet(s) rejected, "
                    f"{errors.corrupt_frames} frame(s) flagged corrupt)"
                )
        except _Untrusted as reason:
            window, linear_because = None, str(reason)
        except av.error.FFmpegError as exc:  # seeking or demuxing a damaged file
            window, linear_because = None, f"seeking failed: {exc}"
    if window is None:
        errors = _ErrorCount()
        window = _linear_window(source, info, config, deadline, errors, keep)
        window.extra["linear_because"] = linear_because
    window.extra["rejected_packets"] = errors.count
    raise_read_error(source, uri)
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
        raise_read_error(source, uri)
        raise _classify_ffmpeg_error(exc, uri) from exc
    except Exception:
        raise_read_error(source, uri)
        raise
    finally:
        if own_source:
            source.close()


def sample_with_pyav(uri: str, config: SamplerConfig) -> FrameSample:
    started = (time.monotonic(), time.process_time())
    with open_source(uri) as source:
        window = decode_window(uri, config, jpeg_renderer(config), source)
        return to_frame_sample(window, config, source, started)
