"""The PyAV fast path ("seek"): decode only the sampling window, exactly as a full decode shows it.

1. Seek to the keyframe before the window and demux (no decoding) until enough frames past the
   middle; the packets' presentation times say where the window is, by the same rule as
   :func:`transforms.decode.sampling_window.choose_window`.
2. Decode from that keyframe with ``skip_frame = "NONREF"`` for packets shown outside the window
   (nothing references them, so the window decodes bit-exactly) and ``"DEFAULT"`` for the window.
3. Check that the decoder showed exactly the frames the packets promised; if a seek overshot
   (MPEG-TS) or landed on leading pictures, seek earlier and repeat.

Whatever this path cannot trust raises :class:`Untrusted`, and the backend decodes linearly instead.
"""

from __future__ import annotations

from typing import Any

from transforms.decode.container import DecodedWindow, VideoInfo
from transforms.decode.pyav_decoding import ErrorCount, Keeper, decode_packet, time_of
from transforms.decode.sampling_window import (
    NeedEarlierFrames,
    NeedLaterFrames,
    claimed_middle,
    decoded_end,
    locate_window,
)
from transforms.decode.types import SamplerConfig

# Packets demuxed past the middle beyond the window, so B-frame reordering cannot hide a window frame.
REORDER_SLACK = 16
SEEK_ATTEMPTS = 6


class Untrusted(Exception):
    """The fast path cannot be trusted for this stream; use the linear path."""


def _demux_run(container, stream, middle_s: float, frames_after: int, at_beginning: bool, deadline):
    """Packets from the keyframe the seek landed on until ``frames_after`` are shown after the middle."""
    packets = []
    after = 0
    reached_end = True
    for packet in container.demux(stream):
        deadline.check()
        if packet.size == 0 and packet.pts is None:
            continue
        if not packets and not at_beginning and not packet.is_keyframe:
            continue
        if packet.pts is None:
            raise Untrusted("packets without presentation timestamps")
        packets.append(packet)
        if time_of(packet.pts, stream.time_base) > middle_s:
            after += 1
            if after >= frames_after:
                reached_end = False
                break
    return packets, reached_end


def _decode_run(
    stream, packets, window_times: list[float], deadline, errors: ErrorCount, keep: Keeper
) -> tuple[dict[float, Any], int, list[float]]:
    """Decode ``packets``, keeping the window's frames.

    Non-reference frames shown before or after the window are skipped by the decoder: nothing
    references them, so the window decodes bit-exactly without them. Once the last packet of the
    window is in, the decoder is drained rather than fed later packets (references always come
    before the frames that use them in decode order).
    """
    ctx = stream.codec_context
    tb = stream.time_base
    start, end = window_times[0], window_times[-1]
    wanted = set(window_times)
    kept: dict[float, Any] = {}
    shown: list[float] = []
    decoded = 0

    def take(frames):
        nonlocal decoded
        for frame in frames:
            decoded += 1
            if frame.pts is None:
                raise Untrusted("decoded frame without timestamp")
            t = time_of(frame.pts, tb)
            if start <= t <= end:
                shown.append(t)
                if t in wanted:
                    kept[t] = keep(frame)

    in_window = [start <= time_of(packet.pts, tb) <= end for packet in packets]
    window_packets_left = sum(in_window)
    for packet, shown_in_window in zip(packets, in_window, strict=True):
        deadline.check()
        ctx.skip_frame = "DEFAULT" if shown_in_window else "NONREF"
        take(decode_packet(ctx, packet, errors))
        window_packets_left -= shown_in_window
        if len(kept) == len(wanted) or window_packets_left == 0:
            break
    if len(kept) < len(wanted):
        # Every window packet is in: drain the decoder instead of decoding later packets.
        take(decode_packet(ctx, None, errors))
    return kept, decoded, shown


def seek_window(
    container, stream, info: VideoInfo, config: SamplerConfig, deadline, errors, keep: Keeper
) -> DecodedWindow:
    middle = claimed_middle(info.start_s, info.duration_s)
    if middle is None:
        raise Untrusted("no claimed duration")
    n, s = config.num_frames, config.stride
    interval = info.frame_interval
    lookback = (s * (n // 2) + 1) * interval
    frames_after = s * (n - n // 2) + REORDER_SLACK
    seek_to = middle - lookback
    decoded_total = 0
    for attempt in range(SEEK_ATTEMPTS):
        at_beginning = seek_to <= info.start_s or attempt == SEEK_ATTEMPTS - 1
        if at_beginning:
            container.seek(0, backward=True, any_frame=False)
        else:
            container.seek(int(seek_to / info.time_base), stream=stream, backward=True, any_frame=False)
        stream.codec_context.flush_buffers()
        packets, reached_end = _demux_run(container, stream, middle, frames_after, at_beginning, deadline)
        if not packets:
            if at_beginning:
                raise Untrusted("nothing to demux from the start")
            seek_to -= lookback * 2 ** (attempt + 1)
            continue
        times = sorted(time_of(p.pts, info.time_base) for p in packets)
        if len(set(times)) != len(times):
            raise Untrusted("duplicate presentation timestamps")
        if reached_end and middle >= decoded_end(times, time_of(packets[-1].duration or 0, info.time_base)):
            raise Untrusted("the claimed duration runs past the last frame")
        keyframe_time = time_of(packets[0].pts, info.time_base)
        try:
            positions = locate_window(
                times, middle, n, s, starts_at_beginning=at_beginning, reaches_end=reached_end
            )
        except NeedEarlierFrames:
            seek_to = min(seek_to, keyframe_time) - lookback * 2 ** (attempt + 1)
            continue
        except NeedLaterFrames:
            frames_after *= 4
            continue
        window_times = [times[p] for p in positions]
        if window_times[0] < keyframe_time and not at_beginning:
            seek_to = keyframe_time - lookback * 2 ** (attempt + 1)
            continue
        kept, decoded, shown = _decode_run(stream, packets, sorted(set(window_times)), deadline, errors, keep)
        decoded_total += decoded
        expected = times[positions[0] : positions[-1] + 1]
        if shown != expected or len(kept) != len(set(window_times)):
            # Only frames missing (leading pictures of an open GOP) can be cured by an earlier seek;
            # frames the packets did not promise, or out of order, mean the timestamps are wrong.
            missing_only = set(shown) < set(expected) and shown == sorted(shown)
            if at_beginning or not missing_only:
                raise Untrusted("the decoder did not show the frames the packets promised")
            seek_to = min(seek_to, keyframe_time) - lookback * 2 ** (attempt + 1)
            continue
        padded = positions[-1] == positions[-2] if len(positions) > 1 else False
        return DecodedWindow(
            frames=[kept[t] for t in window_times],
            times=window_times,
            info=info,
            rotation=keep.rotation,
            padded=padded,
            fallback=False,
            index_timing=False,
            path="seek",
            frames_decoded=decoded_total,
            extra={"seeks": attempt + 1},
        )
    raise Untrusted("no seek produced the window")
