"""benchmarks/gpu_check.py runs end to end on the CPU with tiny sizes, so its code is exercised in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_writes_its_table_on_the_cpu(tmp_path):
    table, figures = tmp_path / "gpu_check.md", tmp_path / "gpu_check.json"
    encoders = "tiny,slowfast_r50,videomae"  # one per library; tests/test_trainer_encoders.py covers all
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--variant", "tiny"]
        + ["--encoders", encoders, "--frame-size", "32", "--batch-size", "2", "--dim", "16"]
        + ["--items", "30", "--steps", "1", "--warmup", "1", "--out", str(table), "--json", str(figures)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(figures.read_text())
    rows = results["steps_by_encoder"]
    assert [(r["encoder"], r["policy"]) for r in rows] == [
        (e, p) for e in encoders.split(",") for p in ("frozen", "top-k", "all")
    ]
    for row in rows:
        assert row["step_s"] > 0 and row["samples_per_s"] > 0 and row["frames_per_s"] > 0
        assert row["peak_gpu_mib"] is None and row["amp"] is False  # CPU: no GPU memory, no autocast
    frozen, top, full = (r["encoder_trainable_parameters"] for r in rows[3:6])  # slowfast_r50
    assert frozen == 0 < top < full
    assert results["loader"]["frames_per_s"] > 0 and results["decode"]["cpu_one_core_frames_per_s"] > 0
    assert results["decode"]["nvjpeg_frames_per_s"] is None and results["decode"]["source"] == "item store"
    no_gpu = [line for line in done.stderr.splitlines() if "nvjpeg" in line]
    assert no_gpu == ["gpu_check: no CUDA device (cpu): nvjpeg decoding of item-store reads not timed"]
    text = table.read_text()
    assert text.count("n/a (cpu)") >= len(rows) and "| slowfast_r50 | top-k |" in text
