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

from transforms.decode.types import FrameSample, SamplerConfig


def sample_video(uri: str, config: SamplerConfig | None = None) -> FrameSample:
    """Sample ``config.num_frames`` middle frames of the video at ``uri`` (local path or ``gs://``).

    Raises:
        VideoError: the video cannot be sampled; ``kind`` classifies why.
    """
    config = config or SamplerConfig()
    if config.backend == "ffmpeg":
        from transforms.decode.ffmpeg_backend import sample_with_ffmpeg

        return sample_with_ffmpeg(uri, config)
    from transforms.decode.pyav_backend import sample_with_pyav

    return sample_with_pyav(uri, config)
