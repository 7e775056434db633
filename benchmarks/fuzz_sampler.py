"""Fuzz the frame sampler with mutated copies of real videos: nothing may hang or crash the caller,
and every file a plain PyAV decode loop samples, the sampler samples too, with the same frames.

Each case takes a real file, applies one seeded mutation (bit flips, a truncation, a zeroed or
spliced header, an overwritten or duplicated chunk), and samples it through
:class:`transforms.decode.isolated_sampler.IsolatedSampler`. Every case must end as ``sampled`` or as a
classified :class:`VideoError`; an exception of any other type reaching this process, a case that
outlives the time limit by more than the grace period, or an ``internal_error`` (a sampler bug) is a
failure.

With ``--compare`` (on by default) each case is also decoded, in a separate worker process, by a
plain loop (:func:`plain_decode_loop`: ``av.open``, first video stream, every packet decoded, packets
the decoder rejects skipped), and the window the sampling definition picks from that loop's frames
is compared with what the sampler's own decode path (``decode_window_pyav``) returns: times and full-size
RGB pixels. A case the plain loop samples (at least one frame, within ``max_pixels``) that the sampler
does not sample is ``missed``; one both sample with different frames is ``different``; both lists
must stay empty. Four kinds of difference are counted apart, as no sampler that seeks can remove
them: ``unstable`` (the plain loop itself gives other pixels on a second run, seen with HEVC and
VVC), ``timing_elsewhere`` (a damaged timestamp somewhere in the file makes the definition spread
the window by frame index, ``index_timing``; the sampler seeks to the middle and cannot see a
timestamp far from it without reading the whole file), ``damage_before_window`` (the sampler's
frames are exactly the plain loop's frames of the undamaged file: the damage lies before the
keyframe it starts decoding at, and reaches the plain loop's window through decoder state, e.g. an
in-band parameter set) and ``unwritten_pixels`` (the plain loop's window changes when it is run
again keeping its decoded frames alive for a shorter or longer time, :func:`held_digests`: the
decoder left part of a damaged frame unwritten without flagging it, so that frame and every frame
predicted from it show whatever a reused buffer held; the pixels then depend on the caller's
buffer lifetimes, not on the file, and the sampler, which decodes fewer frames, reuses other
buffers). An undamaged file never shows that dependence (checked on every file of the shared set).

Measured (seed 0, 1,000 cases over every file of ``../shared/data/videos``, 14 min at ``nice 19``
on 2 loaded cores): 579 sampled, the rest classified (corrupt 332, no_video_stream 44, too_large
34, unsupported_codec 11); no escape, hang, timeout or internal_error; one worker process. The
plain loop sampled 576: the sampler sampled all but one, whose damaged header claims 1280x33488
frames (over ``max_pixels``, a limit judged before decoding, counted with the limits). Of 575
compared, 542 are identical (times and pixels) and none is ``different``; 33 differ as above: 16
``unstable``, 12 ``unwritten_pixels`` and 5 ``timing_elsewhere``. The 12 (cases 112, 184, 214, 225,
241, 283, 459, 506, 650, 670, 770, 801) are MJPEG cut short or bit-flipped inside a scan, and H.264
or HEVC with bytes overwritten or bits flipped inside the coded data, which the decoder neither
rejects nor flags corrupt (``err_detect=careful`` or ``aggressive`` flags none of them either).
Measured pixel by pixel in 8 cases of the two classes, the sampler's differing pixels lie where the
plain loop's own reruns differ: all of them in 225, 241 and 283, 93-100% in 18, 112, 214 and 949,
and 54%, 95% and 100% in 801's three differing frames. Decoding every frame from the keyframe (no
``skip_frame`` of non-reference frames) happens to reproduce the plain loop's buffer reuse in some
(112, 801), but would cost that skip on every file, for pixels that still change with buffer
lifetimes. ``unstable`` cases depend on buffer lifetimes as well (checked on the MPEG-TS HEVC ones,
18, 184, 373 and 650): most likely the same unwritten memory, whose fresh contents change from run to run, so which
of the two classes a case lands in varies between runs (the run before ``unwritten_pixels`` existed
had 13 ``unstable`` and 13 ``different``; each of those 13 is ``unwritten_pixels`` or ``unstable``
in this run).

Replay single cases of a run with ``--only 283,801`` (the other cases' mutations are still drawn,
so each is the same file), and keep their mutated files with ``--save DIR``.

Usage::

    python -m benchmarks.fuzz_sampler --cases 1000 --seed 0 [--videos ../shared/data/videos] [--timeout 10]
        [--only CASE[,CASE...]] [--save DIR] > report.json
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import hashlib
import json
import multiprocessing
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from transforms.decode.isolated_sampler import IsolatedSampler
from transforms.decode.types import SamplerConfig, VideoError

DEFAULT_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".3gp"}
HEADER_BYTES = 4096
LIMITS = ("timeout", "memory", "too_large")
"""Outcomes set by the sampler's limits (time, memory, and ``max_pixels`` judged on the size the
container claims, before any frame is decoded), not by its decoding: such cases are not compared."""
GRACE_S = 5.0


def _bit_flips(data: bytearray, rng: random.Random, _other: bytes) -> str:
    count = rng.choice([1, 4, 16, 64, 256])
    for _ in range(count):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return f"flip {count} bits"


def _header_bit_flips(data: bytearray, rng: random.Random, _other: bytes) -> str:
    count = rng.choice([1, 2, 8, 32])
    for _ in range(count):
        position = rng.randrange(min(len(data), HEADER_BYTES))
        data[position] ^= 1 << rng.randrange(8)
    return f"flip {count} header bits"


def _truncate(data: bytearray, rng: random.Random, _other: bytes) -> str:
    keep = rng.randrange(1, len(data))
    del data[keep:]
    return f"truncate to {keep} bytes"


def _zero_header(data: bytearray, rng: random.Random, _other: bytes) -> str:
    start = rng.randrange(min(len(data), HEADER_BYTES))
    length = rng.choice([4, 8, 64, 512])
    data[start : start + length] = bytes(len(data[start : start + length]))
    return f"zero {length} bytes at {start}"


def _splice_header(data: bytearray, rng: random.Random, other: bytes) -> str:
    cut = rng.randrange(1, min(len(data), len(other), 64 * 1024))
    data[:cut] = other[:cut]
    return f"splice another file's first {cut} bytes"


def _overwrite_chunk(data: bytearray, rng: random.Random, _other: bytes) -> str:
    start = rng.randrange(len(data))
    length = rng.choice([16, 256, 4096])
    data[start : start + length] = rng.randbytes(len(data[start : start + length]))
    return f"randomise {length} bytes at {start}"


def _duplicate_chunk(data: bytearray, rng: random.Random, _other: bytes) -> str:
    start = rng.randrange(len(data))
    length = rng.choice([64, 1024, 16384])
    chunk = bytes(data[start : start + length])
    at = rng.randrange(len(data))
    data[at:at] = chunk
    return f"copy {len(chunk)} bytes from {start} to {at}"


MUTATIONS = {
    "bit_flips": _bit_flips,
    "header_bit_flips": _header_bit_flips,
    "truncate": _truncate,
    "zero_header": _zero_header,
    "splice_header": _splice_header,
    "overwrite_chunk": _overwrite_chunk,
    "duplicate_chunk": _duplicate_chunk,
}


def mutate(data: bytes, other: bytes, rng: random.Random) -> tuple[str, bytes, str]:
    """One seeded mutation of ``data`` (``other`` is another real file, for splices)."""
    name = rng.choice(sorted(MUTATIONS))
    mutated = bytearray(data)
    description = MUTATIONS[name](mutated, rng, other)
    return name, bytes(mutated), description


# ---------------------------------------------------------------------------------------------- reference


def _first_video_stream(container):
    import av

    return next(s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic)


def plain_decode_loop(path: str):
    """``(frame, stream)`` for each frame of a plain PyAV decode loop over ``path``.

    The loop: ``av.open(path)``, the first video stream that is not cover art, ``decode`` of every
    packet ``container.demux(stream)`` yields; a packet whose decoding raises an FFmpeg error is
    skipped, and a demuxer error ends the loop. Opening errors propagate.
    """
    import av

    with av.open(path) as container:
        stream = _first_video_stream(container)
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except (StopIteration, av.error.FFmpegError):
                return
            try:
                frames = stream.codec_context.decode(packet)
            except av.error.FFmpegError:
                continue
            for frame in frames:
                yield frame, stream


def _digest(rgb) -> str:
    return hashlib.sha256(rgb.tobytes() + repr(rgb.shape).encode()).hexdigest()[:16]


def reference_window(path: str, config: SamplerConfig) -> dict:
    """What a plain decode loop samples: ``frames`` decoded, and the chosen window's ``times`` and
    ``digests`` (sha256 of each upright full-size RGB frame); ``too_large`` when frames exceed
    ``config.max_pixels`` (the sampler refuses those by design)."""
    import av

    from transforms.decode.frame_render import frame_rotation, frame_to_rgb
    from transforms.decode.sampling_window import choose_window

    times, last_duration, start_s, duration_s, largest = [], 0.0, 0.0, None, 0
    for index, (frame, stream) in enumerate(plain_decode_loop(path)):
        tb = stream.time_base
        times.append(float(frame.pts * tb) if frame.pts is not None else float(index))
        last_duration = float((frame.duration or 0) * tb)
        largest = max(largest, frame.width * frame.height)
        if index == 0:
            start_s = float(stream.start_time * tb) if stream.start_time is not None else 0.0
            if stream.duration:
                duration_s = float(stream.duration * tb)
            elif stream.container.duration:
                duration_s = stream.container.duration / av.time_base
    out = {
        "frames": len(times),
        "too_large": largest > config.max_pixels,
        "times": [],
        "digests": [],
        "index_timing": False,
        "indices": [],
    }
    if not times or out["too_large"]:
        return out
    window = choose_window(times, last_duration, start_s, duration_s, config.num_frames, config.stride)
    chosen = {}
    for index, (frame, _) in enumerate(plain_decode_loop(path)):
        if index in window.indices and index not in chosen:
            chosen[index] = _digest(frame_to_rgb(frame, frame_rotation(frame)))
        if len(chosen) == len(set(window.indices)):
            break
    out["indices"] = list(window.indices)
    out["times"] = [round(times[i], 9) for i in window.indices]
    out["digests"] = [chosen.get(i) for i in window.indices]
    out["index_timing"] = window.index_timing
    return out


def held_digests(path: str, indices: list[int], held: int) -> list[str | None]:
    """The digests of frames ``indices`` from the plain loop run once more, except that the loop keeps
    only the last ``held`` decoded frames alive (0: each frame is released before the next packet is
    decoded; the plain loop keeps one), which changes which buffers the decoder gets to reuse.

    An undamaged stream gives the same pixels. A damaged frame the decoder left partly unwritten (a
    truncated or cut-short MJPEG scan, an HEVC slice lost without concealment, and every frame that
    references it) shows whatever the reused buffer held: the plain loop's pixels then depend on how
    long its caller keeps each frame, not on the file.
    """
    import av

    from transforms.decode.frame_render import frame_rotation, frame_to_rgb

    wanted, chosen, index = set(indices), {}, 0
    alive: collections.deque = collections.deque(maxlen=held or None)
    with av.open(path) as container:
        stream = _first_video_stream(container)
        packets = container.demux(stream)
        while len(chosen) < len(wanted):
            try:
                packet = next(packets)
            except (StopIteration, av.error.FFmpegError):
                break
            try:
                frames = stream.codec_context.decode(packet)
            except av.error.FFmpegError:
                continue
            while frames:
                frame = frames.pop(0)
                if index in wanted:
                    chosen[index] = _digest(frame_to_rgb(frame, frame_rotation(frame)))
                index += 1
                if held:
                    alive.append(frame)
                del frame
    return [chosen.get(i) for i in indices]


HELD_FRAMES = (0, 16)
"""How many decoded frames :func:`held_digests` keeps alive in its reruns of the plain loop."""


def compare_case(path: str, source: str, config_json: str) -> dict:
    """Worker function: the plain loop's window (``reference``) and the sampler's (``sampler``: times
    and digests, or its error kind) for the mutated file ``path``. When the two differ, also whether
    the plain loop gives the same window again (``reference_stable``), whether its pixels change when
    it keeps decoded frames alive for a shorter or longer time (``reference_unwritten``, see
    :func:`held_digests`) and whether the sampler's window is the plain loop's window of the
    undamaged ``source`` (``sampler_is_clean``)."""
    from transforms.decode.pyav_backend import decode_window_pyav

    config = SamplerConfig.from_dict(json.loads(config_json))

    def reference() -> dict:
        try:
            return reference_window(path, config)
        except Exception as exc:  # noqa: BLE001 - a file the plain loop cannot open is not sampled by it
            return {"frames": 0, "too_large": False, "times": [], "digests": [], "error": repr(exc)[:200]}

    first = reference()
    try:
        window = decode_window_pyav(path, config)
        sampler = {
            "times": [round(t, 9) for t in window.times],
            "digests": [_digest(f) for f in window.frames],
        }
    except VideoError as error:
        sampler = {"error": error.kind, "message": error.message[-200:]}
    got = (sampler.get("times"), sampler.get("digests"))
    if (first["times"], first["digests"]) == got:
        return {
            "reference": first,
            "sampler": sampler,
            "reference_stable": True,
            "reference_unwritten": False,
            "sampler_is_clean": False,
        }
    # A decoder that conceals damage differently on every run has no single right answer.
    stable = first == reference()
    try:
        unwritten = bool(first["indices"]) and any(
            held_digests(path, first["indices"], held) != first["digests"] for held in HELD_FRAMES
        )
    except Exception:  # noqa: BLE001 - the plain loop read this file once; a failure here proves nothing
        unwritten = False
    try:
        clean = reference_window(source, config)
    except Exception:  # noqa: BLE001 - a source the plain loop cannot read gives no clean window
        clean = {"times": None, "digests": None}
    return {
        "reference": first,
        "sampler": sampler,
        "reference_stable": stable,
        "reference_unwritten": unwritten,
        "sampler_is_clean": (clean["times"], clean["digests"]) == got,
    }


def _limit_memory(megabytes: int) -> None:
    import resource

    limit = megabytes * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class Comparer:
    """Runs :func:`compare_case` in one worker process at a time, replaced when it dies or hangs."""

    def __init__(self, timeout_s: float, memory_mb: int):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_limit_memory,
                initargs=(self.memory_mb,),
            )
        return self._pool

    def compare(self, path: str, source: str, config: SamplerConfig) -> dict | None:
        """The worker's answer, or None when it crashed, ran out of memory or took too long."""
        future = self._executor().submit(compare_case, path, source, json.dumps(config.to_dict()))
        try:
            return future.result(timeout=self.timeout_s)
        except (concurrent.futures.TimeoutError, concurrent.futures.process.BrokenProcessPool, MemoryError):
            self.close()
            return None

    def close(self) -> None:
        if self._pool is not None:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class FuzzReport:
    """Outcome counts of a fuzz run. ``escaped``, ``hangs``, ``unexpected`` (``internal_error``: a
    sampler bug), ``missed`` and ``different`` must stay empty; ``unstable``, ``timing_elsewhere``,
    ``damage_before_window`` and ``unwritten_pixels`` are the differences explained in the module
    docstring; ``timeouts`` lists the cases the time limit stopped, for a look at what made them slow. ``plain_sampled`` counts the cases a plain decode
    loop sampled (``compared`` of them were checked against the sampler's frames)."""

    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    by_mutation: dict[str, Counter] = field(default_factory=dict)
    escaped: list[dict] = field(default_factory=list)
    hangs: list[dict] = field(default_factory=list)
    timeouts: list[dict] = field(default_factory=list)
    unexpected: list[dict] = field(default_factory=list)
    plain_sampled: int = 0
    compared: int = 0
    not_compared: int = 0
    missed: list[dict] = field(default_factory=list)
    different: list[dict] = field(default_factory=list)
    unstable: list[dict] = field(default_factory=list)
    timing_elsewhere: list[dict] = field(default_factory=list)
    damage_before_window: list[dict] = field(default_factory=list)
    unwritten_pixels: list[dict] = field(default_factory=list)
    workers_started: int = 0
    max_case_s: float = 0.0
    total_s: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.escaped or self.hangs or self.unexpected or self.missed or self.different)

    def to_dict(self) -> dict:
        return {
            "cases": self.cases,
            "outcomes": dict(sorted(self.outcomes.items())),
            "by_mutation": {name: dict(sorted(c.items())) for name, c in sorted(self.by_mutation.items())},
            "escaped": self.escaped,
            "hangs": self.hangs,
            "timeouts": self.timeouts,
            "unexpected": self.unexpected,
            "plain_sampled": self.plain_sampled,
            "compared": self.compared,
            "not_compared": self.not_compared,
            "missed": self.missed,
            "different": self.different,
            "unstable": self.unstable,
            "timing_elsewhere": self.timing_elsewhere,
            "damage_before_window": self.damage_before_window,
            "unwritten_pixels": self.unwritten_pixels,
            "workers_started": self.workers_started,
            "max_case_s": round(self.max_case_s, 3),
            "total_s": round(self.total_s, 1),
        }


def source_videos(folder: Path, max_bytes: int | None = None) -> list[Path]:
    """Video files in ``folder`` (sorted), optionally only those up to ``max_bytes``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return [p for p in files if max_bytes is None or p.stat().st_size <= max_bytes]


def _compare(
    report: FuzzReport,
    comparer: Comparer,
    target: Path,
    source: Path,
    config: SamplerConfig,
    case: dict,
    outcome: str,
):
    answer = comparer.compare(str(target), str(source), config)
    if answer is None:
        report.not_compared += 1
        return
    reference, sampler = answer["reference"], answer["sampler"]
    if not reference["frames"] or reference["too_large"]:
        return
    report.plain_sampled += 1
    if outcome in LIMITS or sampler.get("error") in LIMITS:
        report.not_compared += 1  # the sampler's limits, not its decoding, stopped it
        return
    if outcome != "sampled" or "error" in sampler:
        report.missed.append(
            {**case, "plain_frames": reference["frames"], "sampler": sampler.get("message", outcome)}
        )
        return
    report.compared += 1
    if (reference["times"], reference["digests"]) == (sampler["times"], sampler["digests"]):
        return
    difference = {**case, "plain": reference["times"], "sampler": sampler["times"]}
    if not answer["reference_stable"]:
        report.unstable.append(difference)
    elif reference["index_timing"]:
        report.timing_elsewhere.append(difference)
    elif answer["sampler_is_clean"]:
        report.damage_before_window.append(difference)
    elif answer["reference_unwritten"]:
        report.unwritten_pixels.append(difference)
    else:
        report.different.append(difference)


def run_fuzz(
    sources: list[Path],
    cases: int,
    seed: int,
    config: SamplerConfig,
    work_dir: Path,
    compare: bool = False,
    compare_memory_mb: int = 4096,
    only: set[int] | None = None,
    save_dir: Path | None = None,
) -> FuzzReport:
    """Sample ``cases`` mutated copies of ``sources`` in an isolated worker and count the outcomes;
    with ``compare``, also check each against a plain decode loop (see the module docstring).

    ``only``: replay just these case numbers (the mutations of the others are still drawn, so each
    case is the same file as in the full run); ``save_dir``: keep each sampled case's mutated file
    there as ``case<N><suffix>``."""
    rng = random.Random(seed)
    contents = [path.read_bytes() for path in sources]
    report = FuzzReport()
    comparer = (
        Comparer(timeout_s=4 * config.timeout_s + GRACE_S, memory_mb=compare_memory_mb) if compare else None
    )
    started = time.monotonic()
    with IsolatedSampler(config) as sampler:
        for case in range(cases if only is None else min(cases, max(only, default=-1) + 1)):
            index = rng.randrange(len(sources))
            name, data, description = mutate(contents[index], contents[rng.randrange(len(sources))], rng)
            if only is not None and case not in only:
                continue
            target = (save_dir or work_dir) / f"case{case if save_dir else ''}{sources[index].suffix}"
            target.write_bytes(data)
            about = {"case": case, "source": sources[index].name, "mutation": description}
            case_started = time.monotonic()
            try:
                sample = sampler.sample(str(target))
                outcome = "sampled" if len(sample.frames) == config.num_frames else "wrong_frame_count"
            except VideoError as error:
                outcome = error.kind
                if error.kind == "internal_error":
                    report.unexpected.append({**about, "error": error.message})
            except Exception as exc:  # noqa: BLE001 - the point is to catch anything that escapes
                outcome = "escaped"
                report.escaped.append({**about, "error": repr(exc)})
            elapsed = time.monotonic() - case_started
            if elapsed > config.timeout_s + GRACE_S:
                report.hangs.append({**about, "seconds": round(elapsed, 1)})
            report.max_case_s = max(report.max_case_s, elapsed)
            report.cases += 1
            report.outcomes[outcome] += 1
            report.by_mutation.setdefault(name, Counter())[outcome] += 1
            if outcome == "timeout":
                report.timeouts.append(about)
            if outcome == "wrong_frame_count":
                report.escaped.append(about)
            if comparer is not None:
                _compare(report, comparer, target, sources[index], config, about, outcome)
        report.workers_started = sampler.workers_started
    if comparer is not None:
        comparer.close()
    report.total_s = time.monotonic() - started
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="mutated files to sample")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same mutations")
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of real videos to mutate")
    parser.add_argument("--max-bytes", type=int, default=None, help="only mutate files up to this size")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-video time limit (s)")
    parser.add_argument("--max-memory-mb", type=int, default=1024, help="per-video memory cap (MiB)")
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the comparison with a plain PyAV decode loop"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="replay only these case numbers of the run (comma-separated, e.g. 12,507)",
    )
    parser.add_argument("--save", type=Path, default=None, help="keep each sampled case's mutated file here")
    args = parser.parse_args(argv)
    only = {int(c) for c in args.only.split(",")} if args.only else None
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
    config = SamplerConfig(size=(64, 64), timeout_s=args.timeout, max_memory_mb=args.max_memory_mb)
    with tempfile.TemporaryDirectory(prefix="fuzz-sampler-") as work:
        report = run_fuzz(
            source_videos(args.videos, args.max_bytes),
            args.cases,
            args.seed,
            config,
            Path(work),
            compare=not args.no_compare,
            only=only,
            save_dir=args.save,
        )
    print(json.dumps(report.to_dict(), indent=2))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
