"""The PyAV decode loop shared by both paths of :mod:`transforms.decode.pyav_backend`.

Packets in, frames out, damage counted (:class:`ErrorCount`): a packet the decoder rejects is
skipped, as a plain decode loop skips it. Also here: the decode deadline, the :class:`Keeper` that
converts each chosen frame the moment it is shown, and how an FFmpeg error becomes a
:class:`transforms.decode.types.VideoError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from transforms.decode.container import VideoInfo
from transforms.decode.frame_render import frame_rotation
from transforms.decode.types import VideoError


def time_of(pts: int, tb: Fraction) -> float:
    """``float(pts * tb)``, computed without building Fractions (the same correctly rounded value)."""
    return pts * tb.numerator / tb.denominator


class Deadline:
    """The time limit of one video's decoding: :meth:`check` raises a ``timeout`` VideoError past it."""

    def __init__(self, uri: str, timeout_s: float):
        self.uri = uri
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise VideoError("timeout", f"{self.uri}: decoding took longer than {self.timeout_s:g} s")


class ErrorCount:
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


def decode_packet(ctx, packet, errors: ErrorCount) -> list[av.VideoFrame]:
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


def decode_all(container, stream, deadline, errors: ErrorCount):
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
        yield from decode_packet(ctx, packet, errors)


class Keeper:
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


def classify_ffmpeg_error(exc: Exception, uri: str) -> VideoError:
    if isinstance(exc, av.error.MemoryError | MemoryError):
        return VideoError("memory", f"{uri}: out of memory while decoding: {exc}")
    if isinstance(exc, av.error.PatchWelcomeError | av.error.DecoderNotFoundError):
        return VideoError("unsupported_codec", f"{uri}: the decoder does not support this stream: {exc}")
    return VideoError("corrupt", f"{uri}: decoding failed: {exc}")
