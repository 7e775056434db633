"""The frame sampler's public types: the leaf of :mod:`transforms.decode`, importing nothing of the project.

:class:`SamplerConfig` (options, validated, with the hash of the fields that change the frames),
:class:`FrameSample` (JPEG frames plus metadata), :class:`VideoError` with its :data:`ERROR_KINDS`,
and :data:`SAMPLER_VERSION`. The sampler, both backends, the renderer and the isolated worker all
import them from here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SAMPLER_VERSION = "1.0"

ERROR_KINDS = (
    "not_found",
    "no_video_stream",
    "unsupported_codec",
    "corrupt",
    "too_large",
    "timeout",
    "memory",
    "io_error",
    "internal_error",
)
"""Why a video could not be sampled:

- ``not_found``: nothing exists at the URI;
- ``no_video_stream``: the file has no video stream (audio only, no streams, a still image);
- ``unsupported_codec``: the bundled FFmpeg has no decoder for it;
- ``corrupt``: the data is damaged: the container does not open, or no frame decodes;
- ``too_large``: frames bigger than ``max_pixels``;
- ``timeout`` / ``memory``: over the time limit or memory cap;
- ``io_error``: reading the file failed (storage or network), still failing after retries; the
  file may be fine, and the next run tries it again;
- ``internal_error``: an unexpected exception in the sampler: a bug, never a property of the file.
"""

RESIZE_MODES = ("center-crop", "squash", "pad")
BACKENDS = ("pyav", "ffmpeg")

# Fields that change the output bytes; the rest (backend, threads, limits) must not.
_CONTENT_FIELDS = ("num_frames", "stride", "size", "resize", "jpeg_quality")


class VideoError(Exception):
    """A video that cannot be sampled. ``kind`` is one of :data:`ERROR_KINDS`; ``message`` says why."""

    def __init__(self, kind: str, message: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown VideoError kind {kind!r}; expected one of {ERROR_KINDS}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    def __reduce__(self):
        return (VideoError, (self.kind, self.message))


@dataclass(frozen=True)
class SamplerConfig:
    """Options of the frame sampler.

    Attributes:
        num_frames: frames per video (N), centred on the frame on screen at the middle time.
        stride: distance between chosen frames, in frames (s); 1 takes consecutive frames.
        size: output ``(height, width)`` in pixels.
        resize: ``"center-crop"`` scales the short side to fit then crops the centre (no distortion,
            the default); ``"squash"`` scales straight to ``size`` ignoring aspect, as the MicroLens
            paper's code does (use ``size=(224, 224)`` for paper parity); ``"pad"`` scales the long
            side to fit and pads with black.
        jpeg_quality: JPEG quality 1..100 of the output frames.
        backend: ``"pyav"`` (in-process, default) or ``"ffmpeg"`` (the ffmpeg CLI).
        threads: decoder threads. 0 (default) leaves threading to FFmpeg, as a plain PyAV decode loop
            does (slice threads; most micro-videos have one slice per frame, so one thread works):
            how a decoder conceals damage depends on its threading, and with FFmpeg's default the
            sampler's frames of a damaged file equal a plain loop's. N >= 1 forces N threads.
        timeout_s: wall-clock limit per video. Enforced hard by ``IsolatedSampler`` (the worker is
            killed); ``sample_video`` checks it between packets only.
        max_memory_mb: memory cap per video worker, enforced by ``IsolatedSampler``.
        max_pixels: largest coded frame (width x height) accepted; larger ones fail as ``too_large``
            before any frame is decoded. The default admits 8K (7680x4320).
    """

    num_frames: int = 5
    stride: int = 1
    size: tuple[int, int] = (256, 256)
    resize: str = "center-crop"
    jpeg_quality: int = 90
    backend: str = "pyav"
    threads: int = 0
    timeout_s: float = 60.0
    max_memory_mb: int = 2048
    max_pixels: int = 7680 * 4320

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        problems = []
        if self.num_frames < 1:
            problems.append(f"num_frames must be >= 1, got {self.num_frames}")
        if self.stride < 1:
            problems.append(f"stride must be >= 1, got {self.stride}")
        if len(self.size) != 2 or min(self.size) < 1:
            problems.append(f"size must be (height, width) with positive values, got {self.size}")
        if self.resize not in RESIZE_MODES:
            problems.append(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.threads < 0:
            problems.append(f"threads must be >= 0, got {self.threads}")
        if self.timeout_s <= 0 or self.max_memory_mb <= 0 or self.max_pixels <= 0:
            problems.append("timeout_s, max_memory_mb and max_pixels must be positive")
        if problems:
            raise ValueError("invalid SamplerConfig: " + "; ".join(problems))

    def config_hash(self) -> str:
        """Short stable hex digest of the fields that change the frames, plus :data:`SAMPLER_VERSION`."""
        content = {name: getattr(self, name) for name in _CONTENT_FIELDS}
        content["size"] = list(self.size)
        content["sampler_version"] = SAMPLER_VERSION
        blob = json.dumps(content, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["size"] = list(self.size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SamplerConfig fields: {sorted(unknown)}")
        return cls(**data)


@dataclass
class FrameSample:
    """The sampler's output for one video.

    Attributes:
        frames: ``num_frames`` JPEG images in presentation order.
        meta: JSON-serialisable facts: ``codec``, ``container``, ``width``/``height`` (display size,
            after rotation), ``rotation``, ``fps``, ``duration_s``, ``pts_s`` (presentation time of
            each chosen frame), ``frames_decoded``, ``padded``, ``fallback``, ``sampler_version``,
            ``config_hash``, ``bytes_read``, ``file_size`` and ``timing`` (``cpu_s``, ``wall_s``: the
            only non-deterministic part; see :meth:`deterministic_meta`).
    """

    frames: list[bytes]
    meta: dict[str, Any] = field(default_factory=dict)

    def deterministic_meta(self) -> dict[str, Any]:
        """``meta`` without the timing sub-dict, identical on every run over the same file."""
        return {k: v for k, v in self.meta.items() if k != "timing"}
