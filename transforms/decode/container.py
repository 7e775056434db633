"""What both backends share: opening a video, choosing and probing its stream, the metadata record.

:func:`open_source` and :func:`open_video_stream` open the file (errors become ``not_found``,
``io_error``, ``no_video_stream`` or ``corrupt``), :func:`choose_stream` picks the first video
stream that is not cover art (a still image has none), :func:`probe` reads what the container claims (:class:`VideoInfo`) and enforces ``max_pixels``; a backend returns
the chosen frames as a :class:`DecodedWindow`, which :func:`to_frame_sample` turns into the
:class:`~transforms.decode.types.FrameSample` with its metadata.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from transforms.decode.types import SAMPLER_VERSION, FrameSample, SamplerConfig, VideoError
from transforms.decode.video_source import CountingReader, is_io_error, open_video


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

    @property
    def frame_interval(self) -> float:
        """Seconds between frames: ``1 / fps`` when the container states a plausible rate (1 to 240),
        else 1/30 s."""
        return 1.0 / self.fps if self.fps and 1.0 <= self.fps <= 240.0 else 1.0 / 30


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


STILL_IMAGE_FORMATS = ("image2",)
"""Demuxers of single images; FFmpeg's image probes (``jpeg_pipe``, ``png_pipe``...) end in ``_pipe``."""


def choose_stream(container, source: io.RawIOBase, uri: str):
    """The first video stream that is not cover art; a still image has none."""
    name = container.format.name
    if name in STILL_IMAGE_FORMATS or name.endswith("_pipe"):
        raise VideoError("no_video_stream", f"{uri} is a still image ({name}), not a video")
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


def open_video_stream(source: CountingReader, uri: str, config: SamplerConfig, *, plain: bool = False):
    """A freshly opened container and its video stream, set up for decoding.

    Other streams are discarded; with ``config.threads`` >= 1 the decoder gets that many threads,
    with 0 FFmpeg's default. ``plain`` leaves both as PyAV sets them (what a plain ``av.open`` +
    decode loop gets): damaged streams decode differently with other threading (VP9 with a damaged
    header decodes only with tile threads), and the sampler must then match such a loop.
    """
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
    if plain:
        return container, stream
    if config.threads > 1:
        stream.thread_type = "AUTO"
    if config.threads:
        stream.codec_context.thread_count = config.threads
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all
    return container, stream


def open_source(uri: str) -> CountingReader:
    """``open_video``, with a missing file reported as ``not_found`` and a storage or network
    failure as ``io_error`` (a directory or another non-file at ``uri`` is ``not_found`` too)."""
    try:
        return open_video(uri)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise VideoError("not_found", str(exc)) from exc
    except Exception as exc:
        if is_io_error(exc):
            raise VideoError("io_error", f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
        raise


def raise_read_error(source: CountingReader, uri: str) -> None:
    """Raise ``io_error`` if reading ``source`` failed: what was decoded cannot be trusted then."""
    error = source.read_error
    if error is not None:
        raise VideoError("io_error", f"reading {uri} failed: {type(error).__name__}: {error}") from error


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
