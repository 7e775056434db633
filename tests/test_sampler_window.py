"""The sampling definition as a pure function of presentation times (no decoding)."""

from __future__ import annotations

import random

import pytest

from transforms.decode.sampling_window import NeedEarlierFrames, NeedLaterFrames, choose_window, locate_window


def cfr_times(count: int, fps: float = 30.0, start: float = 0.0) -> list[float]:
    return [start + i / fps for i in range(count)]


@pytest.mark.parametrize("count", [5, 6, 7, 30, 31, 227, 862, 982])
def test_constant_frame_rate_gives_the_microlens_rule(count):
    times = cfr_times(count)
    window = choose_window(times, 1 / 30, 0.0, count / 30, num_frames=5, stride=1)
    anchor = count // 2
    expected = tuple(range(anchor - 2, anchor + 3))
    if expected[-1] > count - 1:
        expected = tuple(range(count - 5, count))
    assert window.indices == expected
    assert not window.padded and not window.fallback


def test_stride_and_even_window_are_centred_on_the_anchor():
    times = cfr_times(100)
    assert choose_window(times, 1 / 30, 0.0, 100 / 30, 4, 3).indices == (44, 47, 50, 53)
    assert choose_window(times, 1 / 30, 0.0, 100 / 30, 1, 1).indices == (50,)


def test_short_video_is_shifted_inside_then_padded_with_the_last_frame():
    window = choose_window(cfr_times(3), 1 / 30, 0.0, 0.1, 5, 1)
    assert window.indices == (0, 1, 2, 2, 2) and window.padded
    window = choose_window(cfr_times(10), 1 / 30, 0.0, 10 / 30, 5, 3)
    assert window.indices == (0, 3, 6, 9, 9) and window.padded
    assert choose_window([0.0], 0.04, 0.0, 0.04, 5, 1).indices == (0, 0, 0, 0, 0)


def test_the_anchor_is_the_frame_on_screen_at_the_middle_time_for_variable_frame_rates():
    times = [0.0, 0.1, 0.2, 1.5, 1.6, 1.7, 3.9, 4.0]
    window = choose_window(times, 0.1, 0.0, 4.1, 3, 1)
    assert window.anchor == 5  # T = 2.05 s: the frame shown since 1.7 s
    assert window.indices == (4, 5, 6)


def test_false_or_missing_duration_falls_back_to_the_middle_of_what_decodes():
    times = cfr_times(6, fps=12)
    truncated = choose_window(times, 1 / 12, 0.0, 35.2, 5, 1)
    assert truncated.fallback and truncated.anchor == 3
    missing = choose_window(times, 1 / 12, 0.0, None, 5, 1)
    assert missing.fallback and missing.indices == truncated.indices


def test_non_increasing_times_use_index_timing():
    window = choose_window([0.04, 0.16, 0.12, 0.2, 0.08], 0.04, 0.0, 0.2, 3, 1)
    assert window.index_timing and window.indices == (1, 2, 3)


def test_locate_window_on_any_run_after_a_seek_agrees_with_the_full_definition():
    rng = random.Random(5)
    for _ in range(300):
        count = rng.randrange(1, 80)
        times = sorted(rng.sample(range(1000), count))
        times = [t / 100 for t in times]
        num, stride = rng.randrange(1, 8), rng.randrange(1, 4)
        duration = times[-1] + 0.01
        full = choose_window(times, 0.01, 0.0, duration, num, stride)
        if full.fallback:
            continue
        first = rng.randrange(count)
        last = rng.randrange(first, count)
        run = times[first : last + 1]
        try:
            positions = locate_window(
                run, full.middle_s, num, stride, starts_at_beginning=first == 0, reaches_end=last == count - 1
            )
        except (NeedEarlierFrames, NeedLaterFrames):
            continue
        assert tuple(p + first for p in positions) == full.indices
