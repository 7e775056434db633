"""A fixed-seed slice of the sampler fuzz run: mutated real videos never hang or crash the caller, and
the sampler samples every one a plain PyAV decode loop samples, with the same frames."""

from __future__ import annotations

import random

import pytest

from benchmarks.fuzz_sampler import (
    MUTATIONS,
    held_digests,
    mutate,
    reference_window,
    run_fuzz,
    source_videos,
)
from transforms.decode.types import ERROR_KINDS, SamplerConfig

pytestmark = pytest.mark.shared_data


def test_mutations_are_seeded_and_change_the_file():
    data, other = bytes(range(256)) * 64, b"\x00" * 8192
    first = [mutate(data, other, random.Random(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    names = {mutate(data, other, random.Random(seed))[0] for seed in range(200)}
    assert names == set(MUTATIONS)
    assert all(mutate(data, other, random.Random(seed))[1] != data for seed in range(50))


def test_forty_mutated_videos_are_each_sampled_or_classified(shared_data, tmp_path):
    sources = source_videos(shared_data / "videos", max_bytes=1_000_000)
    config = SamplerConfig(size=(32, 32), timeout_s=5.0, max_memory_mb=1024)
    report = run_fuzz(sources, cases=40, seed=1234, config=config, work_dir=tmp_path, compare=True)
    assert report.escaped == []
    assert report.hangs == []
    assert report.unexpected == []
    # Every file a plain PyAV decode loop samples, the sampler samples, with the same frames.
    assert report.plain_sampled > 10 and report.missed == [] and report.different == []
    assert report.cases == 40
    assert set(report.outcomes) <= {"sampled", *ERROR_KINDS}
    assert report.outcomes["sampled"] > 0
    assert sum(report.outcomes.values()) == 40


def test_only_replays_the_same_cases_as_the_full_run(shared_data, tmp_path):
    sources = source_videos(shared_data / "videos", max_bytes=1_000_000)
    config = SamplerConfig(size=(32, 32), timeout_s=5.0, max_memory_mb=1024)
    rng = random.Random(99)
    contents = [path.read_bytes() for path in sources]
    expected = []
    for _ in range(4):
        index = rng.randrange(len(sources))
        expected.append(mutate(contents[index], contents[rng.randrange(len(sources))], rng)[1])
    report = run_fuzz(
        sources, cases=4, seed=99, config=config, work_dir=tmp_path, only={1, 3}, save_dir=tmp_path
    )
    assert report.cases == 2
    saved = {int(p.stem[4:]): p.read_bytes() for p in tmp_path.glob("case*")}
    assert saved == {1: expected[1], 3: expected[3]}


def test_a_frame_left_partly_unwritten_is_told_apart(shared_data, tmp_path):
    """The 3-frame MJPEG stub cut inside its second frame (seed 0's case 283): the decoder leaves the
    rest of that frame unwritten, so a plain loop's pixels depend on which buffer the decoder reuses,
    that is, on how long the loop keeps each frame; an undamaged file does not depend on it."""
    source = shared_data / "videos" / "nwb-video-widgets__stub_mjpeg.avi"
    damaged = tmp_path / "cut.avi"
    damaged.write_bytes(source.read_bytes()[:8423])
    config = SamplerConfig(size=(64, 64), timeout_s=10.0, max_memory_mb=1024)
    plain = reference_window(str(damaged), config)
    assert plain["indices"] == [0, 1, 1, 1, 1]
    assert held_digests(str(damaged), plain["indices"], 1) == plain["digests"]
    assert any(held_digests(str(damaged), plain["indices"], held) != plain["digests"] for held in (0, 16))
    clean = reference_window(str(source), config)
    for held in (0, 1, 16):
        assert held_digests(str(source), clean["indices"], held) == clean["digests"]
