"""A 2-process gloo DDP run under torchrun, and distributed evaluation equal to single-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_dataset import solid_frames, write_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process_evaluation(tmp_path):
    sequences = {str(u): [str((u * 5 + t * 2) % 13 + 1) for t in range(7)] for u in range(40)}
    data = write_dataset(tmp_path / "ds", sequences, frames=solid_frames(10, 2), max_seq_len=4, per_shard=3)
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "trainer.train",
        "--data",
        str(data),
        "--preset",
        "tiny",
        "--output",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--frame-size",
        "8",
        "--gather-negatives",
        "--no-progress",
    ]
    # its own session, so a hung run is killed with all of torchrun's workers
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr[-3000:]

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["world_size"] == 2
    assert records[0]["steps_per_epoch"] == 40 // (2 * 4)
    assert [r["step"] for r in records if r["type"] == "train"] == list(range(1, 11))
    results = json.loads((run / "results.json").read_text())

    # the same checkpoint scored by one process gives the numbers the two ranks computed together
    single = tmp_path / "single.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.evaluate_cli",
            "--checkpoint",
            str(run / "checkpoints" / "best.pt"),
            "--split",
            "both",
            "--output",
            str(single),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads(single.read_text())
    assert scored["test"] == pytest.approx(results["test"], abs=1e-12, nan_ok=True)
    assert scored["valid"] == pytest.approx(results["valid"], abs=1e-12, nan_ok=True)
