"""Synthetic MicroLens-format dataset: interaction logs, titles and really encoded videos.

``generate(out_dir, SynthConfig(...))`` (or ``videorec synth --out DIR``) writes::

    DIR/pairs.csv          user,item,timestamp (header; epoch milliseconds; rows in log order)
    DIR/pairs.tsv          user<TAB>item item ... (one line per user, items in time order, no header)
    DIR/titles.csv         item,title (header; CSV-quoted, some titles with commas, quotes, non-ASCII)
    DIR/videos/{item}.mp4  H.264 or HEVC with B-frames, varied size / fps / GOP, some portrait, some rotated
    DIR/synth.json         ground truth: config, each item's hidden category and video, every planted fault

The planted signal: each item has a hidden category that decides how its video looks (background
hue, complementary foreground colour and a motion pattern). Each user prefers a few categories and
the preferences drift along the sequence; within a category, items are picked by a long-tailed
popularity. Category and popularity are random permutations of the item IDs, so IDs carry no signal,
and a model that sees pixels can recognise a rare item's category where an ID model cannot.

Output is byte-identical for a given config (seed included), whatever the number of worker
processes: every random choice draws from a generator seeded by ``(seed, purpose, id)``, the
encoders run single-threaded and the MP4 muxer writes no version strings or creation times.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import av
import numpy as np

SYNTH_FORMAT_VERSION = 1

# Purposes mixed into every seed, so that e.g. adding users never changes the videos.
_CATALOGUE, _USER, _VIDEO_SPEC, _FAULTS, _TITLE, _FRAMES, _BAD_ROWS = range(7)

MOTIONS = (
    "slide_horizontal",
    "slide_vertical",
    "bounce_diagonal",
    "orbit",
    "pulse",
    "scrolling_stripes",
    "blink",
    "shifting_checkerboard",
)
VIDEO_FAULTS = ("missing_videos", "truncated_videos", "no_video_stream", "corrupt_videos")
BAD_ROW_KINDS = ("missing_field", "bad_timestamp", "empty_user", "empty_item")
# What a reader should make of each planted fault: the failure reason (ingest's names), or for truncated
# files, that they decode only in part.
EXPECTED_OUTCOMES = {
    "missing_videos": "not_found",
    "truncated_videos": "decodes only the frames before the cut; a sampler falls back to their middle",
    "no_video_stream": "no_video_stream",
    "corrupt_videos": "corrupt",
    "bad_rows": "the row's kind (missing_field, bad_timestamp, empty_user or empty_item)",
}
CODEC_ENCODERS = {"h264": "libx264", "hevc": "libx265"}

_MUXER_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}
_DAY_MS = 86_400_000
_TITLE_WORDS = (
    "sunset", "kitten", "recipe", "dance", "street", "food", "travel", "guitar", "morning", "city",
    "puppy", "makeup", "football", "rain", "garden", "vlog", "tutorial", "prank", "ocean", "mountain",
    "café", "naïve", "日常", "美食", "旅行", "🎬", "🔥", "😂", "épisode", "señorita",
)  # fmt: skip


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the generated content. Two equal configs give byte-identical files."""

    users: int = 200
    """Number of users; user IDs are ``1..users``."""
    items: int = 100
    """Number of items (each gets a video); item IDs are ``1..items``."""
    seed: int = 0
    """Root of every random choice."""
    categories: int = 8
    """Hidden item categories; each has its own hue and motion pattern (patterns repeat after 8)."""
    categories_per_user: int = 2
    """How many categories a user prefers at any time."""
    min_interactions: int = 5
    """Fewest interactions per user (the paper's ``min_seq_len`` is 5)."""
    max_interactions: int = 20
    """Most interactions per user (capped by ``items``: a user never repeats an item)."""
    drift_probability: float = 0.1
    """Chance, before each interaction, that one preferred category is swapped for another."""
    off_preference_probability: float = 0.1
    """Chance that an interaction ignores the user's preferences (uniform category)."""
    popularity_exponent: float = 2.0
    """Zipf exponent of item popularity; larger means a longer tail of rare items. Users never repeat
    an item, which flattens the head, hence the steep default (median item: a third of the mean count)."""
    start_ms: int = 1_672_531_200_000
    """Earliest first interaction (epoch ms; 2023-01-01 UTC)."""
    span_days: int = 30
    """Users start at a uniform time within this many days after ``start_ms``."""
    min_seconds: float = 2.0
    """Shortest video duration."""
    max_seconds: float = 8.0
    """Longest video duration."""
    sizes: tuple[tuple[int, int], ...] = ((64, 64), (96, 64), (128, 96), (160, 120), (240, 160), (320, 240))
    """Landscape (width, height) choices, all even; portrait videos swap them. At least 64x64 with HEVC."""
    fps_choices: tuple[int, ...] = (10, 15, 24, 30)
    """Frame rates to draw from."""
    gop_choices: tuple[int, ...] = (12, 30, 60)
    """Keyframe intervals (frames) to draw from."""
    b_frames: int = 2
    """Consecutive B-frames the encoders may use."""
    hevc_fraction: float = 0.5
    """Share of videos encoded as HEVC (libx265); the rest are H.264 (libx264)."""
    portrait_fraction: float = 0.2
    """Share of videos whose displayed picture is taller than wide."""
    rotation_fraction: float = 0.15
    """Share of videos stored sideways or upside down with a display-matrix rotation (-90, 90 or -180)."""
    missing_videos: int = 0
    """Items whose video file is not written at all."""
    truncated_videos: int = 0
    """Items whose file is cut inside the media data (header intact, claims more frames than exist)."""
    no_video_stream: int = 0
    """Items whose file is a valid MP4 holding only an AAC audio stream."""
    corrupt_videos: int = 0
    """Items whose file keeps its ``ftyp`` box and then holds random bytes."""
    bad_rows: int = 0
    """Malformed rows added to ``pairs.csv`` (kinds cycle through ``BAD_ROW_KINDS``)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        if self.users < 1 or self.items < 1:
            raise ValueError("users and items must be at least 1")
        if self.seed < 0:
            raise ValueError(f"seed must not be negative, got {self.seed}")
        if not 1 <= self.categories <= self.items:
            raise ValueError(f"categories must be in 1..items ({self.items}), got {self.categories}")
        if not 1 <= self.categories_per_user <= self.categories:
            raise ValueError("categories_per_user must be in 1..categories")
        if not 1 <= self.min_interactions <= self.max_interactions:
            raise ValueError("need 1 <= min_interactions <= max_interactions")
        if self.min_interactions > self.items:
            raise ValueError(f"min_interactions ({self.min_interactions}) exceeds the number of items")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 < min_seconds <= max_seconds")
        if not (self.sizes and self.fps_choices and self.gop_choices):
            raise ValueError("sizes, fps_choices and gop_choices must not be empty")
        if min(self.fps_choices) < 1 or min(self.gop_choices) < 1 or not 0 <= self.b_frames <= 16:
            raise ValueError("frame rates and GOPs must be positive, b_frames in 0..16")
        for width, height in self.sizes:
            if width < 16 or height < 16 or width % 2 or height % 2:
                raise ValueError(f"video sizes must be even and at least 16x16, got {width}x{height}")
            if self.hevc_fraction > 0 and min(width, height) < 64:
                # The libx265 bundled with PyAV 18.1 corrupts its heap on frames narrower than 64 pixels
                # (48x32 aborts the process); portrait and rotated videos may put either side across.
                raise ValueError(
                    f"HEVC videos need both sides >= 64, got {width}x{height}; or set hevc_fraction 0"
                )
        if any(count < 0 for count in (*self.video_fault_counts().values(), self.bad_rows)):
            raise ValueError("fault counts must not be negative")
        for name in (
            "drift_probability",
            "off_preference_probability",
            "hevc_fraction",
            "portrait_fraction",
            "rotation_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")

    def video_fault_counts(self) -> dict[str, int]:
        """``{fault kind: number of items}`` for the kinds in ``VIDEO_FAULTS``."""
        return {kind: getattr(self, kind) for kind in VIDEO_FAULTS}


@dataclass(frozen=True)
class VideoSpec:
    """How one item's file is made; everything a worker process needs, picklable."""

    item: int
    """Item ID; the file is ``videos/{item}.mp4``."""
    category: int
    """Hidden category: decides the palette and motion pattern."""
    codec: str
    """``h264`` or ``hevc`` (keys of ``CODEC_ENCODERS``)."""
    width: int
    """Displayed width (after rotation)."""
    height: int
    """Displayed height (after rotation)."""
    rotation: int
    """Display-matrix rotation as PyAV reads it back (``VideoFrame.rotation``), counter-clockwise degrees."""
    fps: int
    """Constant frame rate."""
    frames: int
    """Number of frames encoded."""
    gop: int
    """Largest keyframe interval, in frames."""
    b_frames: int
    """Consecutive B-frames allowed."""
    seed: int
    """The dataset seed; the frames draw from ``(seed, item)``."""
    categories: int
    """Number of categories in the dataset (spaces the category hues)."""
    fault: str | None = None
    """One of ``VIDEO_FAULTS`` to plant, or None for a healthy file."""

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) of the stored frames: displayed size, transposed for quarter turns."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)

    def describe(self) -> dict:
        """The JSON-able facts a reader can check in the file (``synth.json`` items[].video)."""
        coded_width, coded_height = self.coded_size
        return {
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "coded_width": coded_width,
            "coded_height": coded_height,
            "rotation": self.rotation,
            "portrait": self.height > self.width,
            "fps": self.fps,
            "frames": self.frames,
            "gop": self.gop,
            "b_frames": self.b_frames,
        }


@dataclass
class Interactions:
    """Clean interaction log: per-user time-ordered ``(item, timestamp_ms)`` plus preference history."""

    sequences: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    preferences: dict[int, dict[str, list[int]]] = field(default_factory=dict)


def _rng(seed: int, purpose: int, *ids: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, ids): results never depend on call order."""
    return np.random.default_rng([seed, purpose, *ids])


# ---------------------------------------------------------------------------------------------------
# Catalogue and interactions
# ---------------------------------------------------------------------------------------------------


def assign_categories(config: SynthConfig) -> np.ndarray:
    """Hidden category of item ``i`` at index ``i - 1``: balanced, in random order relative to IDs."""
    rng = _rng(config.seed, _CATALOGUE)
    return rng.permutation(np.arange(config.items) % config.categories)


def popularity_weights(config: SynthConfig) -> np.ndarray:
    """Zipf weight of item ``i`` at index ``i - 1``, ranks drawn independently of ID and category."""
    rng = _rng(config.seed, _CATALOGUE, 1)
    ranks = rng.permutation(config.items) + 1
    return 1.0 / ranks.astype(np.float64) ** config.popularity_exponent


def generate_interactions(config: SynthConfig, categories: np.ndarray) -> Interactions:
    """Draw each user's sequence: preferred categories (drifting), then a popular unseen item of one."""
    weights = popularity_weights(config)
    members = [np.flatnonzero(categories == c) for c in range(config.categories)]
    result = Interactions()
    max_len = min(config.max_interactions, config.items)
    for user in range(1, config.users + 1):
        rng = _rng(config.seed, _USER, user)
        preferred = list(rng.choice(config.categories, config.categories_per_user, replace=False))
        initial = sorted(int(c) for c in preferred)
        length = int(rng.integers(config.min_interactions, max_len + 1))
        clock = config.start_ms + int(rng.integers(0, config.span_days * _DAY_MS))
        seen = np.zeros(config.items, dtype=bool)
        sequence = []
        for _ in range(length):
            others = [c for c in range(config.categories) if c not in preferred]
            if others and rng.random() < config.drift_probability:
                preferred[int(rng.integers(len(preferred)))] = int(rng.choice(others))
            if rng.random() < config.off_preference_probability:
                category = int(rng.integers(config.categories))
            else:
                category = int(rng.choice(preferred))
            candidates = members[category][~seen[members[category]]]
            if candidates.size == 0:
                candidates = np.flatnonzero(~seen)
            chances = weights[candidates] / weights[candidates].sum()
            index = int(rng.choice(candidates, p=chances))
            seen[index] = True
            clock += 1_000 + int(rng.exponential(2 * 3_600_000))
            sequence.append((index + 1, clock))
        result.sequences[user] = sequence
        result.preferences[user] = {"initial": initial, "final": sorted(int(c) for c in preferred)}
    return result


def video_spec(config: SynthConfig, item: int, category: int) -> VideoSpec:
    """Codec, size, rotation, rate, length and GOP of one item's video, drawn from ``(seed, item)``."""
    rng = _rng(config.seed, _VIDEO_SPEC, item)
    width, height = config.sizes[int(rng.integers(len(config.sizes)))]
    if rng.random() < config.portrait_fraction:
        width, height = min(width, height), max(width, height)
    else:
        width, height = max(width, height), min(width, height)
    # PyAV reads a half turn back as -180, so plant it as that.
    rotation = int(rng.choice((-90, -90, 90, -180))) if rng.random() < config.rotation_fraction else 0
    fps = int(config.fps_choices[int(rng.integers(len(config.fps_choices)))])
    seconds = rng.uniform(config.min_seconds, config.max_seconds)
    return VideoSpec(
        item=item,
        category=category,
        codec="hevc" if rng.random() < config.hevc_fraction else "h264",
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        frames=max(2, round(seconds * fps)),
        gop=int(config.gop_choices[int(rng.integers(len(config.gop_choices)))]),
        b_frames=config.b_frames,
        seed=config.seed,
        categories=config.categories,
    )


def plant_video_faults(config: SynthConfig, interactions: Interactions) -> dict[str, list[int]]:
    """Pick distinct items for each video fault, only among items that appear in the log."""
    referenced = sorted({item for seq in interactions.sequences.values() for item, _ in seq})
    wanted = config.video_fault_counts()
    if sum(wanted.values()) > len(referenced):
        raise ValueError(
            f"asked for {sum(wanted.values())} faulty videos but only {len(referenced)} items are referenced"
        )
    order = [int(i) for i in _rng(config.seed, _FAULTS).permutation(referenced)]
    faults, start = {}, 0
    for kind, count in wanted.items():
        faults[kind] = sorted(order[start : start + count])
        start += count
    return faults


def make_title(seed: int, item: int) -> str:
    rng = _rng(seed, _TITLE, item)
    words = [str(w) for w in rng.choice(_TITLE_WORDS, int(rng.integers(2, 7)))]
    if rng.random() < 0.2:
        words[0] += ","
    if rng.random() < 0.1:
        words[-1] = f'"{words[-1]}"'
    return " ".join(words)


# ---------------------------------------------------------------------------------------------------
# Pictures and encoding
# ---------------------------------------------------------------------------------------------------


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
    rng = _rng(spec.seed, _FRAMES, spec.item)
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
    with av.open(str(path), "w", format="mp4", options=_MUXER_OPTIONS) as container:
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
    with av.open(str(path), "w", format="mp4", options=_MUXER_OPTIONS) as container:
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
    fraction = _rng(seed, _FAULTS, item).uniform(0.3, 0.7)
    keep = mdat_offset + 8 + int((mdat_size - 8) * fraction)
    path.write_bytes(data[:keep])
    return {"bytes_before": len(data), "bytes_kept": keep}


def corrupt_after_ftyp(path: Path, seed: int, item: int) -> dict:
    """Keep the ``ftyp`` box (so it still looks like an MP4) and overwrite the rest with random bytes."""
    data = path.read_bytes()
    _, ftyp_size = _top_level_boxes(data)[b"ftyp"]
    garbage = _rng(seed, _FAULTS, item).bytes(len(data) - ftyp_size)
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


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


def bad_row(kind: str, user: int, item: int, timestamp: int) -> str:
    """One malformed ``pairs.csv`` line of the given kind (see ``BAD_ROW_KINDS``)."""
    return {
        "missing_field": f"{user},{item}",
        "bad_timestamp": f"{user},{item},not-a-time",
        "empty_user": f",{item},{timestamp}",
        "empty_item": f"{user},,{timestamp}",
    }[kind]


def pairs_csv_lines(config: SynthConfig, interactions: Interactions) -> tuple[list[str], list[dict]]:
    """Data lines of ``pairs.csv`` in log order (by time, then user, then item), bad rows mixed in.

    Returns the lines (without the header) and one record per bad row with its 1-based file line
    number (the header is line 1).
    """
    rows = sorted(
        (timestamp, user, item) for user, seq in interactions.sequences.items() for item, timestamp in seq
    )
    lines = [f"{user},{item},{timestamp}" for timestamp, user, item in rows]
    rng = _rng(config.seed, _BAD_ROWS)
    positions = sorted(int(p) for p in rng.integers(0, len(lines) + 1, config.bad_rows))
    planted = []
    for offset, position in enumerate(positions):
        kind = BAD_ROW_KINDS[offset % len(BAD_ROW_KINDS)]
        timestamp, user, item = rows[int(rng.integers(len(rows)))]
        line = bad_row(kind, user, item, timestamp)
        lines.insert(position + offset, line)
        planted.append({"kind": kind, "line": position + offset + 2, "text": line})
    return lines, planted


def write_tables(out_dir: Path, config: SynthConfig, interactions: Interactions) -> list[dict]:
    """Write pairs.csv, pairs.tsv and titles.csv; return the planted bad rows."""
    lines, planted = pairs_csv_lines(config, interactions)
    (out_dir / "pairs.csv").write_text("user,item,timestamp\n" + "".join(f"{ln}\n" for ln in lines))
    with open(out_dir / "pairs.tsv", "w", encoding="utf-8", newline="\n") as tsv:
        for user, seq in sorted(interactions.sequences.items()):
            tsv.write(f"{user}\t{' '.join(str(item) for item, _ in seq)}\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["item", "title"])
    writer.writerows([item, make_title(config.seed, item)] for item in range(1, config.items + 1))
    (out_dir / "titles.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return planted


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------


def _prepare(out_dir: Path, overwrite: bool) -> None:
    outputs = [out_dir / name for name in ("pairs.csv", "pairs.tsv", "titles.csv", "synth.json", "videos")]
    present = [p for p in outputs if p.exists()]
    if present and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds synth output ({present[0].name}); pass overwrite=True"
        )
    for path in present:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out_dir / "videos").mkdir(parents=True)


def generate(
    out_dir: str | os.PathLike,
    config: SynthConfig | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a synthetic dataset to ``out_dir``; return the ground truth also saved as ``synth.json``.

    ``workers`` is the number of encoding processes (default: all CPUs); it never changes the output.
    ``overwrite`` replaces earlier synth output in ``out_dir`` (other files there are left alone).
    ``progress(done, total)`` is called after each video.
    """
    config = config or SynthConfig()
    config.validate()
    out_dir = Path(out_dir)
    _prepare(out_dir, overwrite)
    categories = assign_categories(config)
    interactions = generate_interactions(config, categories)
    faults = plant_video_faults(config, interactions)
    fault_of = {item: kind for kind, items in faults.items() for item in items}
    specs = [
        replace(video_spec(config, item, int(categories[item - 1])), fault=fault_of.get(item))
        for item in range(1, config.items + 1)
    ]
    bad_rows = write_tables(out_dir, config, interactions)
    details = write_videos(out_dir / "videos", specs, workers or os.cpu_count() or 1, progress)
    summary = ground_truth(config, interactions, specs, faults, details, bad_rows)
    (out_dir / "synth.json").write_text(
        json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary


def ground_truth(
    config: SynthConfig,
    interactions: Interactions,
    specs: list[VideoSpec],
    faults: dict[str, list[int]],
    details: dict[int, dict],
    bad_rows: list[dict],
) -> dict:
    """The ``synth.json`` document. IDs are strings, exactly as they appear in the files."""
    popularity = {spec.item: 0 for spec in specs}
    for seq in interactions.sequences.values():
        for item, _ in seq:
            popularity[item] += 1
    num_interactions = sum(popularity.values())
    return {
        "synth_format_version": SYNTH_FORMAT_VERSION,
        "config": asdict(config),
        "files": {
            "pairs_csv": "pairs.csv",
            "pairs_tsv": "pairs.tsv",
            "titles_csv": "titles.csv",
            "videos": "videos/{item}.mp4",
        },
        "notes": {
            "pairs_tsv": "holds exactly the well-formed rows of pairs.csv; bad rows exist only in pairs.csv",
            "rotation": "counter-clockwise degrees as PyAV's VideoFrame.rotation reads it; stored frames are "
            "the displayed picture turned the other way, so applying the rotation shows it upright",
            "timestamps": "epoch milliseconds; no two interactions of one user share a timestamp",
            "bad_rows": "line is the 1-based line number in pairs.csv, whose line 1 is the header",
            "faults": "faulty videos are all referenced by pairs.csv; their interactions are left in the log",
        },
        "expected_outcomes": EXPECTED_OUTCOMES,
        "counts": {
            "users": len(interactions.sequences),
            "items": len(specs),
            "interactions": num_interactions,
            "csv_data_rows": num_interactions + len(bad_rows),
            "bad_rows": len(bad_rows),
            "video_files": sum(1 for spec in specs if spec.fault != "missing_videos"),
            "faulty_videos": sum(len(items) for items in faults.values()),
        },
        "categories": [
            {
                "category": c,
                "motion": MOTIONS[c % len(MOTIONS)],
                "background_rgb": list(category_palette(c, config.categories)[0]),
                "foreground_rgb": list(category_palette(c, config.categories)[1]),
            }
            for c in range(config.categories)
        ],
        "items": [
            {
                "item": str(spec.item),
                "category": spec.category,
                "popularity": popularity[spec.item],
                "fault": spec.fault,
                "video": spec.describe(),
            }
            for spec in specs
        ],
        "users": [
            {
                "user": str(user),
                "interactions": len(seq),
                "preferred_categories": interactions.preferences[user],
            }
            for user, seq in sorted(interactions.sequences.items())
        ],
        "faults": {
            **{
                kind: [{"item": str(item), "path": f"videos/{item}.mp4", **details[item]} for item in items]
                for kind, items in faults.items()
            },
            "bad_rows": bad_rows,
        },
    }


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    """Content options use the ``SynthConfig`` field names as destinations."""
    defaults = SynthConfig()
    parser = argparse.ArgumentParser(
        prog="videorec synth",
        description="Generate a synthetic MicroLens-format dataset: pairs.csv, pairs.tsv, titles.csv, "
        "videos/{item}.mp4 and the ground truth synth.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder, created if absent")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier synth output in --out")
    parser.add_argument(
        "--workers", type=int, help="encoding processes, all CPUs if unset; never changes the output"
    )
    content = parser.add_argument_group("content (changes the files)")
    content.add_argument("--users", type=int, default=defaults.users, help="user IDs 1..N")
    content.add_argument("--items", type=int, default=defaults.items, help="item IDs 1..N, one video each")
    content.add_argument("--seed", type=int, default=defaults.seed, help="same seed, same bytes")
    content.add_argument("--categories", type=int, default=defaults.categories, help="hidden item categories")
    content.add_argument("--min-interactions", type=int, default=defaults.min_interactions, help="per user")
    content.add_argument("--max-interactions", type=int, default=defaults.max_interactions, help="per user")
    content.add_argument("--min-seconds", type=float, default=defaults.min_seconds, help="shortest video")
    content.add_argument("--max-seconds", type=float, default=defaults.max_seconds, help="longest video")
    content.add_argument(
        "--sizes", type=_size, nargs="+", default=defaults.sizes, metavar="WxH", help="landscape sizes"
    )
    content.add_argument(
        "--fps", dest="fps_choices", type=int, nargs="+", default=defaults.fps_choices, help="frame rates"
    )
    content.add_argument(
        "--gop",
        dest="gop_choices",
        type=int,
        nargs="+",
        default=defaults.gop_choices,
        help="keyframe intervals",
    )
    content.add_argument("--b-frames", type=int, default=defaults.b_frames, help="consecutive B-frames")
    content.add_argument("--hevc-fraction", type=float, default=defaults.hevc_fraction, help="share of HEVC")
    content.add_argument(
        "--portrait-fraction", type=float, default=defaults.portrait_fraction, help="portrait"
    )
    content.add_argument(
        "--rotation-fraction", type=float, default=defaults.rotation_fraction, help="with display rotation"
    )
    faults = parser.add_argument_group("planted faults (recorded in synth.json)")
    faults.add_argument("--missing-videos", type=int, default=0, metavar="N", help="videos not written")
    faults.add_argument("--truncated-videos", type=int, default=0, metavar="N", help="files cut inside mdat")
    faults.add_argument("--no-video-stream", type=int, default=0, metavar="N", help="audio-only MP4s")
    faults.add_argument("--corrupt-videos", type=int, default=0, metavar="N", help="random bytes after ftyp")
    faults.add_argument("--bad-rows", type=int, default=0, metavar="N", help="malformed pairs.csv rows")
    return parser


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    values = {f.name: getattr(args, f.name) for f in fields(SynthConfig) if hasattr(args, f.name)}
    return SynthConfig(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})


def _print_progress(done: int, total: int) -> None:
    """One updating line on a terminal; every tenth in logs."""
    if sys.stderr.isatty():
        print(
            f"\rsynth: videos {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True
        )
    elif done == total or done % max(1, total // 10) == 0:
        print(f"synth: videos {done}/{total}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        config = config_from_args(args)
        summary = generate(
            args.out, config, workers=args.workers, overwrite=args.overwrite, progress=_print_progress
        )
    except (ValueError, FileExistsError) as error:
        print(f"videorec synth: {error}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    print(
        f"synth: wrote {args.out}: {counts['users']} users, {counts['items']} items, "
        f"{counts['interactions']} interactions, {counts['video_files']} video files "
        f"({counts['faulty_videos']} faulty), {counts['bad_rows']} bad rows "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0
