"""PyAV backend: decode only what the sampling window needs, exactly as a full decode would show it.

Fast path ("seek", :mod:`transforms.decode.pyav_seek`): seek to the keyframe before the window,
locate the window from the packets' timestamps, decode only from that keyframe to the window's end,
and check the decoder showed what the packets promised.

Slow path ("linear", here), for what the fast path cannot trust (false or missing duration, packets
without timestamps, a check that fails): decode everything once to learn the times, choose, decode
again keeping the chosen frames.

Each kept frame is handed to a ``convert`` function the moment the decoder outputs it (JPEG rendering
from :mod:`transforms.decode.frame_render` when sampling, full-size RGB in the exactness tests). Both
paths share the decode loop of :mod:`transforms.decode.pyav_decoding`, which also turns FFmpeg
errors into :class:`transforms.decode.types.VideoError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from transforms.decode.frame_render import frame_to_rgb, jpeg_renderer
from transforms.decode.pyav_decoding import (
    Deadline,
    ErrorCount,
    Keeper,
    classify_ffmpeg_error,
    decode_all,
    time_of,
)
from transforms.decode.pyav_seek import Untrusted, seek_window
from transforms.decode.sampling_window import choose_window
from transforms.decode.types import FrameSample, SamplerConfig, VideoError
from transforms.decode.video_source import CountingReader

# ---------------------------------------------------------------- linear path


def _linear_times(container, stream, deadline, errors) -> tuple[list[float], float, int]:
    tb = stream.time_base
    times: list[float] = []
    last_duration = 0.0
    for index, frame in enumerate(decode_all(container, stream, deadline, errors)):
        deadline.check()
        times.append(time_of(frame.pts, tb) if frame.pts is not None else float(index))
        last_duration = time_of(frame.duration or 0, tb)
    return times, last_duration, len(times)


def _linear_window(
    source, info: VideoInfo, config: SamplerConfig, deadline, errors, keep: Keeper
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
        for index, frame in enumerate(decode_all(container, stream, deadline, ErrorCount())):
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


def _decode_from_source(source: CountingReader, uri: str, config: SamplerConfig, convert) -> DecodedWindow:
    deadline = Deadline(uri, config.timeout_s)
    errors = ErrorCount()
    container, stream = open_video_stream(source, uri, config)
    with container:
        info = probe(container, stream, uri, config)
        keep = Keeper(convert, info)
        try:
            window = seek_window(container, stream, info, config, deadline, errors, keep)
            if errors.any:
                raise Untrusted(
                    f"damage near the middle ({errors.count} packet(s) rejected, "
                    f"{errors.corrupt_frames} frame(s) flagged corrupt)"
                )
        except Untrusted as reason:
            window, linear_because = None, str(reason)
        except av.error.FFmpegError as exc:  # seeking or demuxing a damaged file
            window, linear_because = None, f"seeking failed: {exc}"
    if window is None:
        errors = ErrorCount()
        window = _linear_window(source, info, config, deadline, errors, keep)
        window.extra["linear_because"] = linear_because
    window.extra["rejected_packets"] = errors.count
    raise_read_error(source, uri)
    return window


def decode_window_pyav(
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
        return _decode_from_source(source, uri, config, convert or frame_to_rgb)
    except VideoError:
        raise
    except (av.error.FFmpegError, MemoryError) as exc:
        raise_read_error(source, uri)
        raise classify_ffmpeg_error(exc, uri) from exc
    except Exception:
        raise_read_error(source, uri)
        raise
    finally:
        if own_source:
            source.close()


def sample_with_pyav(uri: str, config: SamplerConfig) -> FrameSample:
    started = (time.monotonic(), time.process_time())
    with open_source(uri) as source:
        window = decode_window_pyav(uri, config, jpeg_renderer(config), source)
        return to_frame_sample(window, config, source, started)
