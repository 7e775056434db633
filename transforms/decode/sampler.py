"""Public API of the frame sampler: a few exact middle frames of one video, as JPEGs plus metadata.

The frames chosen are defined in :mod:`transforms.decode.sampling_window` (the middle by time, a centred
window in presentation order, shifted then padded for short videos, the middle of what decodes when
the claimed duration is false); docs/SAMPLER.md has the full definition. Two interchangeable
backends produce them:

* ``"pyav"`` (default): in-process PyAV; keyframe seek, non-reference frames outside the window are
  skipped by the decoder (bit-exact), one colour conversion + resize per kept frame.
* ``"ffmpeg"``: the ffmpeg command-line tool (found on ``FFMPEG_BINARY``, ``PATH`` or imageio-ffmpeg)
  decodes the window; the same frames, then the same conversion as the PyAV backend.

``sample_video`` runs in the calling process and cannot stop a decoder that never returns; use
:class:`transforms.decode.isolated_sampler.IsolatedSampler` for a hard time limit and memory cap.
"""

from __future__ import annotations

import time

from transforms.decode.types import FrameSample, SamplerConfig, VideoError

IO_ATTEMPTS = 3
"""Tries of a video whose reading fails with a storage or network error (``io_error``)."""

IO_BACKOFF_S = 0.5
"""Wait before the second try; doubled before each further one."""

UNEXPECTED = "{uri}: unexpected error in the sampler (a bug, not a property of the file): "
"""Start of the message of an ``internal_error``."""


def sample_video(uri: str, config: SamplerConfig | None = None) -> FrameSample:
    """Sample ``config.num_frames`` middle frames of the video at ``uri`` (local path or ``gs://``).

    A storage or network error is retried :data:`IO_ATTEMPTS` times with exponential backoff (while
    half of ``config.timeout_s`` is left), then reported as ``io_error``. An exception that is not a
    ``VideoError`` nor a ``MemoryError`` is a bug: it is reported as ``internal_error``.

    Raises:
        VideoError: the video cannot be sampled; ``kind`` classifies why.
        MemoryError: Python itself ran out of memory (the isolated worker reports it as ``memory``).
    """
    config = config or SamplerConfig()
    started = time.monotonic()
    wait = IO_BACKOFF_S
    for attempt in range(1, IO_ATTEMPTS + 1):
        try:
            return _sample_once(uri, config)
        except VideoError as error:
            out_of_time = time.monotonic() - started + wait > config.timeout_s / 2
            if error.kind != "io_error" or attempt == IO_ATTEMPTS or out_of_time:
                if error.kind == "io_error":
                    raise VideoError("io_error", f"{error.message} (tried {attempt} times)") from error
                raise
        time.sleep(wait)
        wait *= 2
    raise AssertionError("unreachable")


def _sample_once(uri: str, config: SamplerConfig) -> FrameSample:
    try:
        if config.backend == "ffmpeg":
            from transforms.decode.ffmpeg_backend import sample_with_ffmpeg

            return sample_with_ffmpeg(uri, config)
        from transforms.decode.pyav_backend import sample_with_pyav

        return sample_with_pyav(uri, config)
    except (VideoError, MemoryError):
        raise
    except Exception as exc:
        message = UNEXPECTED.format(uri=uri) + f"{type(exc).__name__}: {exc}"
        raise VideoError("internal_error", message) from exc
