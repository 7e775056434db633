"""What decides a synthetic dataset: :class:`SynthConfig`, one video's :class:`VideoSpec`, the clean log.

Every random choice of the generator draws from :func:`seeded_rng` with one of the ``SEED_*``
purposes mixed in, so results never depend on call order or on the number of worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Purposes mixed into every seed, so that e.g. adding users never changes the videos.
SEED_CATALOGUE, SEED_USER, SEED_VIDEO_SPEC, SEED_FAULTS, SEED_TITLE, SEED_FRAMES, SEED_BAD_ROWS = range(7)

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
    new_items: int = 0
    """Items released late (drawn at random, categories like any other item): no user interacts with
    one before ``new_item_release_day``; from then on each weighs as much as an average item."""
    new_item_release_day: float = 15.0
    """Days after ``start_ms`` when the new items are released."""

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
        if not 0 <= self.new_items < self.items or self.new_item_release_day < 0:
            raise ValueError("new_items must be in 0..items-1 and new_item_release_day not negative")
        if self.min_interactions > self.items - self.new_items:
            raise ValueError("min_interactions exceeds the number of items released from the start")
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


def seeded_rng(seed: int, purpose: int, *ids: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, ids): results never depend on call order."""
    return np.random.default_rng([seed, purpose, *ids])
