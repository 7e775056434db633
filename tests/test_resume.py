"""Kill-and-resume: a run killed at an arbitrary step and restarted continues the same run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures_dataset import solid_frames, write_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def _train_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "train"]


def _command(data: Path, run: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainer.train",
        "--data",
        str(data),
        "--preset",
        "tiny",
        "--output",
        str(run),
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--frame-size",
        "8",
        "--augment",  # the tiny preset does not augment; the resumed crops and flips must match too
        "--num-workers",
        "2",
        "--checkpoint-every",
        "1",
        "--no-progress",
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    sequences = {str(u): [str((u * 7 + t * 3) % 17 + 1) for t in range(7)] for u in range(32)}
    return write_dataset(
        tmp_path_factory.mktemp("ds"), sequences, frames=solid_frames(10, 2), max_seq_len=4, per_shard=3
    )


def test_killed_run_resumes_with_the_same_loss_curve(dataset, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    subprocess.run(_command(dataset, reference), cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    expected = [(r["step"], r["loss"]) for r in _train_records(reference)]
    assert len(expected) == 24  # 3 epochs x 8 steps, with shard and sample shuffling on

    process = subprocess.Popen(
        _command(dataset, resumed),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (resumed / "metrics.jsonl").exists() and len(_train_records(resumed)) >= 11:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(_train_records(resumed))
    assert 11 <= killed_at < 24

    subprocess.run(_command(dataset, resumed), cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    got = [(r["step"], r["loss"]) for r in _train_records(resumed)]
    assert [step for step, _ in got] == list(range(1, 25))  # no step lost or repeated
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in expected], rel=1e-6, abs=1e-7)
    reference_results = json.loads((reference / "results.json").read_text())
    resumed_results = json.loads((resumed / "results.json").read_text())
    assert resumed_results["test"] == pytest.approx(reference_results["test"], nan_ok=True)
