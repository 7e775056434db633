"""Decoder threads: ingest decodes each video on one thread unless told otherwise; ``videorec frames``
keeps FFmpeg's choice (issue 21, item 7; figures in docs/SAMPLER.md, benchmarks/bench_decode_threads.py)."""

from __future__ import annotations

import pytest

from pipeline.flags import sampler_settings
from pipeline.frames import build_parser as frames_parser
from pipeline.graph import ingest_sampler
from pipeline.options import parse
from pipeline.options import parser as ingest_parser
from transforms.decode.types import SamplerConfig

INGEST = ["--interactions=pairs.csv", "--videos=videos", "--output=out"]


@pytest.mark.parametrize(
    ("flags", "threads"), [([], 1), (["--decode-threads", "0"], 0), (["--decode-threads=3"], 3)]
)
def test_ingest_decodes_each_video_on_one_thread_unless_told_otherwise(flags, threads):
    config, _, _ = parse([*INGEST, *flags])
    sampler, section = ingest_sampler(config)
    assert sampler.threads == threads
    # threads never change the frames, so never the dataset: the manifest's sampler section is the same
    assert section == ingest_sampler(parse(INGEST)[0])[1]


def test_frames_keeps_ffmpegs_choice():
    args = frames_parser().parse_args(["video.mp4", "--output", "out"])
    assert SamplerConfig(**sampler_settings(args)).threads == 0 == SamplerConfig().threads


def test_help_states_each_commands_default():
    ingest_help = " ".join(ingest_parser().format_help().split())
    frames_help = " ".join(frames_parser().format_help().split())
    assert "decodes each video on one thread (default: 1)" in ingest_help
    assert "as a plain PyAV decode loop (default: 0)" in frames_help
