"""One item's video: pictures drawn from its category, encoded bit-exactly, faults planted in the file.

Files are written in worker processes (:func:`write_videos`); each worker needs only a picklable
:class:`~pipeline.synth.config.VideoSpec`.
"""

from __future__ import annotations

import colorsys
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import av
import numpy as np

from pipeline.synth.config import MOTIONS, SEED_FAULTS, SEED_FRAMES, VideoSpec, seeded_rng

CODEC_ENCODERS = {"h264": "libx264", "hevc": "libx265"}

MUXER_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}


def category_palette(category: int, categories: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, foreground) RGB of a category: evenly spaced hues, complementary foreground."""
    hue = category / categories
    background = colorsys.hsv_to_rgb(hue, 0.8, 0.75)
    foreground = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.6, 0.95)
    return tuple(round(255 * v) for v in background), tuple(round(255 * v) for v in foreground)


def render_frames(spec: VideoSpec) -> Iterator[np.ndarray]:
    """The displayed pictures of a video, ``(height, width, 3)`` uint8 RGB, one per frame.

    Background: the category hue, a little darker at the top (so "up" is visible). Foreground: the
    complementary colour moving in the category's motion pattern, with per-item size, speed and phase.
    """
    rng = seeded_rng(spec.seed, SEED_FRAMES, spec.item)
    width, height = spec.width, spec.height
    background, foreground = (
        np.array(c, dtype=np.float32) for c in category_palette(spec.category, spec.categories)
    )
    shade = np.linspace(0.8, 1.0, height, dtype=np.float32)[:, None, None]
    base = (np.broadcast_to(background, (height, width, 3)) * shade).astype(np.uint8)
    ink = foreground.astype(np.uint8)
    side = max(4, int(min(width, height) * rng.uniform(0.2, 0.35)))
    cycles_per_second = rng.uniform(0.3, 1.0)
    phase = rng.uniform()
    period = max(4, int(min(width, height) * rng.uniform(0.15, 0.3)))
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    motion = MOTIONS[spec.category % len(MOTIONS)]
    for index in range(spec.frames):
        t = (phase + cycles_per_second * index / spec.fps) % 1.0
        wave = 1.0 - abs(2.0 * t - 1.0)  # triangle 0 -> 1 -> 0
        frame = base.copy()
        if motion == "slide_horizontal":
            x, y = int(t * (width - side)), (height - side) // 2
            frame[y : y + side, x : x + side] = ink
        elif motion == "slide_vertical":
            x, y = (width - side) // 2, int(t * (height - side))
            frame[y : y + side, x : x + side] = ink
        elif motion == "bounce_diagonal":
            x, y = int(wave * (width - side)), int(wave * (height - side))
            frame[y : y + side, x : x + side] = ink
        elif motion == "orbit":
            angle = 2.0 * np.pi * t
            x = int((width - side) / 2 * (1 + 0.8 * np.cos(angle)))
            y = int((height - side) / 2 * (1 + 0.8 * np.sin(angle)))
            frame[y : y + side, x : x + side] = ink
        elif motion == "pulse":
            size = max(2, int(side * (0.5 + 1.5 * wave)))
            x, y = (width - size) // 2, (height - size) // 2
            frame[max(0, y) : y + size, max(0, x) : x + size] = ink
        elif motion == "scrolling_stripes":
            frame[:, ((cols[0] + int(t * 2 * period)) // period) % 2 == 0] = ink
        elif motion == "blink":
            if t < 0.5:
                frame[height // 4 : height // 4 + 2 * side, width // 4 : width // 4 + 2 * side] = ink
        else:  # shifting_checkerboard
            shift = int(t * 2 * period)
            frame[(((rows + shift) // period) + ((cols + shift) // period)) % 2 == 0] = ink
        yield frame


def to_stored(picture: np.ndarray, rotation: int) -> np.ndarray:
    """The coded frame whose display (rotated ``rotation`` degrees counter-clockwise) is ``picture``."""
    return np.ascontiguousarray(np.rot90(picture, k=-(rotation // 90)))


def encode_video(path: Path, spec: VideoSpec) -> None:
    """Encode ``spec`` to an MP4 at ``path``: single-threaded, bit-exact, moov atom first."""
    coded_width, coded_height = spec.coded_size
    options = {"preset": "ultrafast"}
    if spec.codec == "hevc":
        options["x265-params"] = (
            f"log-level=error:pools=none:frame-threads=1:info=0:bframes={spec.b_frames}:b-adapt=0"
        )
    with av.open(str(path), "w", format="mp4", options=MUXER_OPTIONS) as container:
        stream = container.add_stream(CODEC_ENCODERS[spec.codec], rate=spec.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = coded_width, coded_height, "yuv420p"
        context = stream.codec_context
        context.gop_size = spec.gop
        context.max_b_frames = spec.b_frames
        context.thread_count = 1
        context.flags |= av.codec.context.Flags.bitexact  # no version strings
        if spec.rotation:
            stream.set_display_rotation(spec.rotation)
        for index, picture in enumerate(render_frames(spec)):
            frame = av.VideoFrame.from_ndarray(to_stored(picture, spec.rotation), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def encode_audio_only(path: Path, seconds: float) -> None:
    """A valid MP4 with one AAC stream (a quiet tone) and no video stream."""
    rate, chunk = 16_000, 1024
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    with av.open(str(path), "w", format="mp4", options=MUXER_OPTIONS) as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        stream.codec_context.flags |= av.codec.context.Flags.bitexact  # no version strings
        for start in range(0, tone.size, chunk):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + chunk], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _top_level_boxes(data: bytes) -> dict[bytes, tuple[int, int]]:
    """``{box type: (offset, size)}`` of an MP4's top-level boxes (first of each type)."""
    boxes, offset = {}, 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8]
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        boxes.setdefault(kind, (offset, size))
        if size < 8:
            break
        offset += size
    return boxes


def truncate_inside_media(path: Path, seed: int, item: int) -> dict:
    """Cut the file 30-70% of the way into its ``mdat`` box, leaving the (front) header intact."""
    data = path.read_bytes()
    mdat_offset, mdat_size = _top_level_boxes(data)[b"mdat"]
    fraction = seeded_rng(seed, SEED_FAULTS, item).uniform(0.3, 0.7)
    keep = mdat_offset + 8 + int((mdat_size - 8) * fraction)
    path.write_bytes(data[:keep])
    return {"bytes_before": len(data), "bytes_kept": keep}


def corrupt_after_ftyp(path: Path, seed: int, item: int) -> dict:
    """Keep the ``ftyp`` box (so it still looks like an MP4) and overwrite the rest with random bytes."""
    data = path.read_bytes()
    _, ftyp_size = _top_level_boxes(data)[b"ftyp"]
    garbage = seeded_rng(seed, SEED_FAULTS, item).bytes(len(data) - ftyp_size)
    path.write_bytes(data[:ftyp_size] + garbage)
    return {"bytes": len(data), "garbage_from": ftyp_size}


def write_video(job: tuple[str, VideoSpec]) -> tuple[int, dict]:
    """Worker entry point: write one item's file (or nothing, for a missing video); return fault details."""
    videos_dir, spec = job
    path = Path(videos_dir) / f"{spec.item}.mp4"
    if spec.fault == "missing_videos":
        return spec.item, {}
    if spec.fault == "no_video_stream":
        encode_audio_only(path, spec.frames / spec.fps)
        return spec.item, {"streams": ["audio"]}
    encode_video(path, spec)
    if spec.fault == "truncated_videos":
        return spec.item, truncate_inside_media(path, spec.seed, spec.item)
    if spec.fault == "corrupt_videos":
        return spec.item, corrupt_after_ftyp(path, spec.seed, spec.item)
    return spec.item, {}


def write_videos(
    videos_dir: Path,
    specs: list[VideoSpec],
    workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, dict]:
    """Write every spec's file, in ``workers`` processes (inline when 1); return details by item.

    Workers start fresh (forkserver or spawn, never a fork of a possibly threaded caller); a worker that
    dies raises ``BrokenProcessPool`` here instead of hanging.
    """
    jobs = [(str(videos_dir), spec) for spec in specs]
    details: dict[int, dict] = {}

    def collect(results: Iterable[tuple[int, dict]]) -> None:
        for item, info in results:
            details[item] = info
            if progress:
                progress(len(details), len(jobs))

    if workers <= 1 or len(jobs) <= 1:
        collect(map(write_video, jobs))
        return details
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        collect(future.result() for future in as_completed([pool.submit(write_video, job) for job in jobs]))
    return details
