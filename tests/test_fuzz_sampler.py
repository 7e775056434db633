"""A fixed-seed slice of the sampler fuzz run: mutated real videos never hang or crash the caller, and
the sampler samples every one a plain PyAV decode loop samples, with the same frames."""

from __future__ import annotations

import random

import pytest

from benchmarks.fuzz_sampler import MUTATIONS, mutate, run_fuzz, source_videos
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
