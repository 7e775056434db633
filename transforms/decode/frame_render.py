"""Turning a decoded frame into what the sampler outputs: upright, resized once, JPEG-encoded.

One colour conversion + resize (swscale, bilinear) goes straight from the decoder's pixel format to
the scaled size in stored orientation; rotation and the centre crop or padding then work on the
small RGB image. Both backends use these functions, so equal decoded pixels give equal JPEGs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import av
import numpy as np

from transforms.decode.types import SamplerConfig


def frame_rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise degrees (0, 90, 180, 270) to turn the stored image upright."""
    rotation = frame.rotation or 0
    return int(round(rotation / 90.0)) * 90 % 360


def _target_geometry(width: int, height: int, sar: float, rotation: int, config: SamplerConfig):
    """``(width, height)`` to scale the stored frame to: after rotation it covers (crop), fits (pad)
    or equals (squash) the output size."""
    out_h, out_w = config.size
    quarter = rotation in (90, 270)
    disp_w, disp_h = width * (sar if sar > 0 else 1.0), float(height)
    if quarter:
        disp_w, disp_h = disp_h, disp_w
    if config.resize == "squash":
        scaled_w, scaled_h = out_w, out_h
    else:
        pick = max if config.resize == "center-crop" else min
        factor = pick(out_w / disp_w, out_h / disp_h)
        scaled_w = max(1, round(disp_w * factor))
        scaled_h = max(1, round(disp_h * factor))
        if config.resize == "center-crop":
            scaled_w, scaled_h = max(scaled_w, out_w), max(scaled_h, out_h)
        else:
            scaled_w, scaled_h = min(scaled_w, out_w), min(scaled_h, out_h)
    if quarter:
        return scaled_h, scaled_w
    return scaled_w, scaled_h


def rotate_upright(array: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored-orientation image as a viewer sees it (``rotation`` counter-clockwise degrees)."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(array, k=turns)) if turns else array


def canonical_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame's pixels copied into a fresh, plainly laid out frame, for conversion.

    swscale's results depend on how the source planes sit in memory: the same pixels scaled from a
    decoder's padded buffers and from ffmpeg's packed output differ, and PyAV 18 converts a decoder's
    own 10-bit frames to RGB with wrong colours (up to 131 levels off ffmpeg's conversion, on the
    High10 test files). Copying first makes the output depend on the pixels only, whichever backend
    decoded them; it costs one copy of the visible bytes of each plane.
    """
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    components = frame.format.components
    for index, (source, target) in enumerate(zip(frame.planes, copy.planes, strict=True)):
        row_bytes = target.width * sum((c.bits + 7) // 8 for c in components if c.plane == index)
        if not 0 < row_bytes <= min(source.line_size, target.line_size):
            return frame  # an unusual packed layout: convert the frame as it is
        rows = target.height
        source_rows = np.frombuffer(source, np.uint8)[: rows * source.line_size].reshape(
            rows, source.line_size
        )
        target_rows = np.frombuffer(target, np.uint8)[: rows * target.line_size].reshape(
            rows, target.line_size
        )
        target_rows[:, :row_bytes] = source_rows[:, :row_bytes]
    copy.colorspace, copy.color_range = frame.colorspace, frame.color_range
    return copy


def frame_to_rgb(frame: av.VideoFrame, rotation: int, info: Any = None) -> np.ndarray:
    """Full-size upright RGB image of a decoded frame (the exactness tests compare these).

    ``info`` is unused: the argument completes the ``convert(frame, rotation, info)`` signature.
    """
    return rotate_upright(canonical_frame(frame).to_ndarray(format="rgb24"), rotation)


def render_rgb(frame: av.VideoFrame, rotation: int, sar: float, config: SamplerConfig) -> np.ndarray:
    """One colour conversion + resize to the target, then rotation and centre crop or pad."""
    scaled_w, scaled_h = _target_geometry(frame.width, frame.height, sar, rotation, config)
    rgb = canonical_frame(frame).reformat(
        width=scaled_w, height=scaled_h, format="rgb24", interpolation="BILINEAR"
    )
    image = rotate_upright(rgb.to_ndarray(), rotation)
    out_h, out_w = config.size
    height, width = image.shape[:2]
    if config.resize == "center-crop":
        top, left = (height - out_h) // 2, (width - out_w) // 2
        return np.ascontiguousarray(image[top : top + out_h, left : left + out_w])
    if config.resize == "pad":
        canvas = np.zeros((out_h, out_w, 3), dtype=np.uint8)
        top, left = (out_h - height) // 2, (out_w - width) // 2
        canvas[top : top + height, left : left + width] = image
        return canvas
    return image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_renderer(config: SamplerConfig) -> Callable[[av.VideoFrame, int, Any], bytes]:
    """``convert(frame, rotation, info)`` for ``decode_window_pyav`` and ``decode_window_ffmpeg`` that
    renders output JPEGs (``info`` is the stream's :class:`transforms.decode.container.VideoInfo`, for
    its pixel aspect ratio)."""

    def render(frame: av.VideoFrame, rotation: int, info: Any) -> bytes:
        return encode_jpeg(render_rgb(frame, rotation, info.sample_aspect, config), config.jpeg_quality)

    return render
