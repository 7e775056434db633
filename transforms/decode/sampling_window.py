"""Which frames to sample, as a pure function of presentation times (no decoding here).

The definition (see docs/SAMPLER.md):

1. ``T`` is the middle of the video stream's claimed duration: ``start + duration / 2``.
2. The anchor is the frame on screen at ``T``: the last frame whose presentation time is ``<= T``
   (the first frame if ``T`` comes before it).
3. ``N`` frames at stride ``s`` are centred on the anchor in presentation order: the first is
   ``anchor - s * (N // 2)`` (for N=5, s=1: anchor-2 .. anchor+2, the MicroLens rule).
4. Too short: the window is shifted back inside the video (first moved so the last fits, never
   before frame 0); positions still past the last frame repeat the last frame (``padded``).
5. False duration: if the claimed duration is missing, or its middle ``T`` lies at or past the end of
   what decodes (last frame time + its duration), ``T`` becomes the middle of what decodes
   (``fallback``).
6. Timestamps that do not increase in decode-output order cannot be trusted as times; positions are
   then spread evenly over the duration (``index_timing``).

``choose_window`` applies this to a full list of times (the reference, from a linear decode).
``locate_window`` applies the same rule to a partial run of frames found after a seek, telling the
caller when it needs frames from earlier or later.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Chosen frames: ``indices`` into the list of frames given (repeats allowed, when ``padded``)."""

    indices: tuple[int, ...]
    anchor: int
    middle_s: float
    padded: bool
    fallback: bool
    index_timing: bool = False


class NeedEarlierFrames(Exception):
    """The window starts before the first frame seen; seek earlier and try again."""


class NeedLaterFrames(Exception):
    """The window ends after the last frame seen and the stream has not ended; read further."""


def claimed_middle(start_s: float, duration_s: float | None) -> float | None:
    """``T`` from the claimed duration, or None when there is no usable claim."""
    if duration_s is None or not duration_s > 0:
        return None
    return start_s + duration_s / 2.0


def decoded_end(times: Sequence[float], last_duration_s: float) -> float:
    """End of what decodes: the last frame's time plus its duration (the previous interval if unknown)."""
    last_duration = last_duration_s
    if not last_duration > 0 and len(times) >= 2:
        last_duration = times[-1] - times[-2]
    return times[-1] + max(last_duration, 0.0)


def anchor_position(times: Sequence[float], middle_s: float) -> int:
    """Position of the frame on screen at ``middle_s``; -1 if ``middle_s`` is before every frame."""
    return bisect.bisect_right(times, middle_s) - 1


def window_positions(anchor: int, count: int, num_frames: int, stride: int) -> tuple[tuple[int, ...], bool]:
    """Positions of the window in a list of ``count`` frames, and whether any had to be padded."""
    first = anchor - stride * (num_frames // 2)
    last = first + stride * (num_frames - 1)
    if last > count - 1:
        first = count - 1 - stride * (num_frames - 1)
    first = max(first, 0)
    positions = [first + stride * k for k in range(num_frames)]
    padded = positions[-1] > count - 1
    return tuple(min(p, count - 1) for p in positions), padded


def is_increasing(times: Sequence[float]) -> bool:
    return all(b > a for a, b in zip(times, times[1:], strict=False))


def choose_window(
    times: Sequence[float],
    last_duration_s: float,
    start_s: float,
    duration_s: float | None,
    num_frames: int,
    stride: int,
) -> Window:
    """The definition over every decodable frame (``times`` in decode-output order, seconds)."""
    if not times:
        raise ValueError("no frames to choose from")
    count = len(times)
    if not is_increasing(times):
        middle = claimed_middle(start_s, duration_s)
        anchor = count // 2
        if middle is not None:
            anchor = min(int(count * (middle - start_s) / duration_s), count - 1)
        positions, padded = window_positions(anchor, count, num_frames, stride)
        return Window(positions, anchor, start_s + (duration_s or 0) / 2, padded, False, index_timing=True)
    middle = claimed_middle(start_s, duration_s)
    end = decoded_end(times, last_duration_s)
    fallback = middle is None or middle >= end
    if fallback:
        middle = (times[0] + end) / 2.0
    anchor = max(anchor_position(times, middle), 0)
    positions, padded = window_positions(anchor, count, num_frames, stride)
    return Window(positions, anchor, middle, padded, fallback)


def locate_window(
    times: Sequence[float],
    middle_s: float,
    num_frames: int,
    stride: int,
    *,
    starts_at_beginning: bool,
    reaches_end: bool,
) -> tuple[int, ...]:
    """The definition over a contiguous run of frames ``times`` (sorted) found after a seek.

    Returns window positions within ``times``. (Whether the claimed middle lies past the end of
    what decodes is the caller's check: ``decoded_end`` once the run reaches the end.)

    Raises:
        NeedEarlierFrames: the window begins before ``times[0]`` and this is not the stream's start.
        NeedLaterFrames: the window ends after ``times[-1]`` and the stream goes on.
    """
    count = len(times)
    anchor = anchor_position(times, middle_s)
    if anchor < 0:
        if not starts_at_beginning:
            raise NeedEarlierFrames
        anchor = 0
    if anchor == count - 1 and not reaches_end:
        raise NeedLaterFrames
    first = anchor - stride * (num_frames // 2)
    if first + stride * (num_frames - 1) > count - 1:
        if not reaches_end:
            raise NeedLaterFrames
        first = count - 1 - stride * (num_frames - 1)
    if first < 0:
        if not starts_at_beginning:
            raise NeedEarlierFrames
        first = 0
    positions = [first + stride * k for k in range(num_frames)]
    if positions[-1] > count - 1 and not reaches_end:
        raise NeedLaterFrames
    return tuple(min(p, count - 1) for p in positions)
