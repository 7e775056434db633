"""Fuzz the frame sampler with mutated copies of real videos: nothing may hang or crash the caller.

Each case takes a real file, applies one seeded mutation (bit flips, a truncation, a zeroed or
spliced header, an overwritten or duplicated chunk), and samples it through
:class:`transforms.decode.isolated_sampler.IsolatedSampler`. Every case must end as ``sampled`` or as a
classified :class:`VideoError`; an exception of any other type reaching this process, or a case that
outlives the time limit by more than the grace period, is a failure.

Usage::

    python -m benchmarks.fuzz_sampler --cases 1000 --seed 0 [--videos ../shared/data/videos] [--timeout 10]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from transforms.decode.isolated_sampler import UNEXPECTED_PREFIX, IsolatedSampler
from transforms.decode.types import SamplerConfig, VideoError

DEFAULT_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".3gp"}
HEADER_BYTES = 4096
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


@dataclass
class FuzzReport:
    """Outcome counts of a fuzz run; ``escaped``, ``hangs`` and ``unexpected`` (a Python exception
    inside the worker, reported as ``corrupt``: a sampler bug) must stay empty; ``timeouts`` lists the
    cases the time limit stopped, for a look at what made them slow."""

    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    by_mutation: dict[str, Counter] = field(default_factory=dict)
    escaped: list[dict] = field(default_factory=list)
    hangs: list[dict] = field(default_factory=list)
    timeouts: list[dict] = field(default_factory=list)
    unexpected: list[dict] = field(default_factory=list)
    workers_started: int = 0
    max_case_s: float = 0.0
    total_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "cases": self.cases,
            "outcomes": dict(sorted(self.outcomes.items())),
            "by_mutation": {name: dict(sorted(c.items())) for name, c in sorted(self.by_mutation.items())},
            "escaped": self.escaped,
            "hangs": self.hangs,
            "timeouts": self.timeouts,
            "unexpected": self.unexpected,
            "workers_started": self.workers_started,
            "max_case_s": round(self.max_case_s, 3),
            "total_s": round(self.total_s, 1),
        }


def source_videos(folder: Path, max_bytes: int | None = None) -> list[Path]:
    """Video files in ``folder`` (sorted), optionally only those up to ``max_bytes``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return [p for p in files if max_bytes is None or p.stat().st_size <= max_bytes]


def run_fuzz(sources: list[Path], cases: int, seed: int, config: SamplerConfig, work_dir: Path) -> FuzzReport:
    """Sample ``cases`` mutated copies of ``sources`` in an isolated worker and count the outcomes."""
    rng = random.Random(seed)
    contents = [path.read_bytes() for path in sources]
    report = FuzzReport()
    started = time.monotonic()
    with IsolatedSampler(config) as sampler:
        for case in range(cases):
            index = rng.randrange(len(sources))
            name, data, description = mutate(contents[index], contents[rng.randrange(len(sources))], rng)
            target = work_dir / f"case{sources[index].suffix}"
            target.write_bytes(data)
            case_started = time.monotonic()
            try:
                sample = sampler.sample(str(target))
                outcome = "sampled" if len(sample.frames) == config.num_frames else "wrong_frame_count"
            except VideoError as error:
                outcome = error.kind
                if error.message.startswith(UNEXPECTED_PREFIX.format(uri=target)):
                    report.unexpected.append(
                        {"case": case, "source": sources[index].name, "error": error.message}
                    )
            except Exception as exc:  # noqa: BLE001 - the point is to catch anything that escapes
                outcome = "escaped"
                report.escaped.append({"case": case, "source": sources[index].name, "error": repr(exc)})
            elapsed = time.monotonic() - case_started
            if elapsed > config.timeout_s + GRACE_S:
                report.hangs.append(
                    {"case": case, "source": sources[index].name, "seconds": round(elapsed, 1)}
                )
            report.max_case_s = max(report.max_case_s, elapsed)
            report.cases += 1
            report.outcomes[outcome] += 1
            report.by_mutation.setdefault(name, Counter())[outcome] += 1
            if outcome == "timeout":
                report.timeouts.append({"case": case, "source": sources[index].name, "mutation": description})
            if outcome == "wrong_frame_count":
                report.escaped.append({"case": case, "source": sources[index].name, "mutation": description})
        report.workers_started = sampler.workers_started
    report.total_s = time.monotonic() - started
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of real videos to mutate")
    parser.add_argument("--max-bytes", type=int, default=None, help="only mutate files up to this size")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-video time limit (s)")
    parser.add_argument("--max-memory-mb", type=int, default=1024)
    args = parser.parse_args(argv)
    config = SamplerConfig(size=(64, 64), timeout_s=args.timeout, max_memory_mb=args.max_memory_mb)
    with tempfile.TemporaryDirectory(prefix="fuzz-sampler-") as work:
        report = run_fuzz(
            source_videos(args.videos, args.max_bytes), args.cases, args.seed, config, Path(work)
        )
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if not (report.escaped or report.hangs or report.unexpected) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
