"""Every registered encoder trains a step and evaluates a small dataset within 4 GB at 112 px on the CPU.

Issue 23, item 15: ``videorec train --encoder mvit_v2_s --freeze all --frame-size 112 --batch-size 2
--max-steps 1`` was killed at 24 GB of RSS, because MViT ran every 5-frame 112 px clip resampled
to 16 x 224 x 224 (8 x 56 x 56 tokens instead of 3 x 28 x 28). Each test runs the full-size,
randomly initialised net (no download) as that command does, in a child process whose peak RSS
is read from ``os.wait4``; the child's address space is capped as well, so a regression fails
the test instead of taking the machine's memory. The full nets take 30-70 s each on 2 busy
cores, so all but ``tiny`` are marked slow.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_dataset import solid_frames, write_dataset
from trainer.models.encoder_registry import ENCODERS

PEAK_RSS_LIMIT = 4 * 2**30
ADDRESS_SPACE_CAP = 12 * 2**30
"""Far above what a 4 GB run maps (torch reserves address space it never touches), far below the
machine's memory."""
QUICK = {"tiny"}


ITEMS = 65
"""Three batches of evaluation's item encoding (``--item-batch-size`` 32)."""


@pytest.fixture(scope="module")
def frames_112(tmp_path_factory) -> Path:
    """5 users of 13 interactions, no item shared, 5 frames of 112 px per item: each training window
    holds 11 distinct items, so a step of ``--batch-size 2`` encodes 22 clips, the most it can (the
    issue's command on windows of ``max_seq_len + 1``). Full fine-tuning would keep the activations
    of all 22 (4.7-4.8 GB with ``r2plus1d_18``); the activation budget (1 GB on the CPU) encodes them
    in checkpointed chunks (``tests/test_activation_budget.py``)."""
    sequences = {str(u): [str(13 * u + t + 1) for t in range(13)] for u in range(5)}
    folder = tmp_path_factory.mktemp("frames112") / "ds"
    return write_dataset(folder, sequences, frames=solid_frames(size=112, num_frames=5), max_seq_len=10)


def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


def train_peak_rss(argv: list[str], log: Path) -> tuple[int, int]:
    """(exit status, peak RSS in bytes) of ``videorec train ARGV`` run in a child process."""
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "train", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_cap_address_space,
        )
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss * 1024


@pytest.mark.parametrize(
    "encoder",
    [name if name in QUICK else pytest.param(name, marks=pytest.mark.slow) for name in sorted(ENCODERS)],
)
def test_encoder_trains_and_evaluates_within_4_gb_at_112_px(encoder, frames_112, tmp_path):
    run = tmp_path / "run"
    argv = ["--data", str(frames_112), "--encoder", encoder, "--freeze", "all", "--frame-size", "112"]
    argv += ["--batch-size", "2", "--max-steps", "1", "--output", str(run), "--no-progress"]
    status, peak = train_peak_rss(argv, tmp_path / "log.txt")

    output = (tmp_path / "log.txt").read_text()
    assert status == 0, output[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 1
    assert results["items"]["items_encoded"] == ITEMS  # every item encoded for the test split
    print(f"{encoder}: peak RSS {peak / 2**20:.0f} MiB")  # shown with -s
    assert peak < PEAK_RSS_LIMIT, f"{encoder}: peak RSS {peak / 2**20:.0f} MiB"
