"""Ingest at scale on the local runner, the project's code against a baseline ref in the same run.

For each size, ``python -m pipeline.main --interactions CSV --output DIR --quiet`` runs as a child
process (DirectRunner, ``--workers`` worker processes in multi_processing mode, Beam flags only), once
per code version: the working tree ("project") and, with ``--baseline-ref REF``, the same commands on a
``git worktree`` of REF ("baseline", imported through ``PYTHONPATH``, same venv). Measured per run:

- wall time, rows/s (``rows_read / wall``) and, with videos, videos/s (``items_encoded / wall``);
- CPU seconds of the whole process tree (``wait4`` rusage: the driver and every worker it reaped);
- peak RSS of the largest single process of the tree (DirectRunner workers are separate processes)
  and of the tree as a whole, from ``/proc`` polled every ``--poll`` seconds;
- whether the manifest's ``counts`` reconcile (rows, items, users: read == used + dropped); a run
  that exits non-zero, e.g. with ``ReconciliationError``, is not reconciled.

Sizes: ID-only logs from ``benchmarks/gen_logs.py`` (``--sizes`` rows, ``rows / --rows-per-user``
users, ``--items`` items: the same catalogue at every size); with ``--videos``, also ``videorec synth``
datasets of ``--video-sizes`` small videos (64x64, 1-2 s, 10 fps), ingested with ``--videos`` at
``--frame-size 224 --resize squash``; with ``--parquet ROWS``, one Parquet file of the same rows as the
CSV log of ``ROWS`` rows (row groups of 2^20 rows, as pyarrow writes them), ingested right after that
CSV with the project's code, so both figures come from the same run. Then, per code version, a linear fit ``wall = fixed + per_row *
rows`` (and per video) with its largest relative residual, and a projection of a Dataflow run on full
MicroLens from the measured per-element CPU (see ``project_dataflow``), with the flags to set.

    nice -n 19 .venv/bin/python benchmarks/bench_scale.py [--sizes 200000 2000000 10000000] \\
        [--videos] [--parquet 10000000] [--baseline-ref REF] [--json OUT.json] [--scratch /tmp/videorec-scale]

Inputs are generated under ``--scratch`` (reused when present: generation is deterministic); nothing
is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.gen_logs import LogShape, generate, rows_per_user  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
CLOCK = os.sysconf("SC_CLK_TCK")
REAL_VIDEOS = REPO.parent / "shared" / "data" / "videos"

# Full MicroLens (the paper; ../shared/BRIEF.md).
MICROLENS = {"videos": 1_140_000, "users": 34_500_000, "interactions": 1_000_000_000, "frame_px": 224}
# List prices, USD, us-central1 (cloud.google.com/dataflow/pricing, /storage/pricing), no discounts.
PRICES = {
    "dataflow_batch_vcpu_hour": 0.056,
    "dataflow_batch_memory_gb_hour": 0.003557,
    "dataflow_pd_standard_gb_hour": 0.000054,
    "dataflow_shuffle_gb": 0.011,
    "gcs_standard_gb_month": 0.020,
}
# The Dataflow worker the flags below name: n2-standard-4, 4 vCPU, 16 GB.
WORKER = {"machine_type": "n2-standard-4", "vcpus": 4, "memory_gb": 16, "disk_gb": 25}
TARGET_HOURS = 2.0  # wall time the worker count is sized for
MAX_SEQ_LEN = 10  # the ingest default: train windows hold the last max_seq_len + 1 training items
FRAMES_PER_ITEM = 5
NIGHTLY_FRAMES = ["--frame-size=16", "--num-frames=1", "--resize=squash"]
"""Frames of the nightly runs: one 16 px frame, so train shards that embed frames stay a few GB at 10M rows."""


@dataclass(frozen=True)
class Code:
    """A version of the project to run: its label and the folder imported through PYTHONPATH."""

    label: str
    root: Path


# ---------------------------------------------------------------- process tree


def proc_table() -> dict[int, tuple[int, int]]:
    """``{pid: (parent pid, resident bytes)}`` of every process, from ``/proc/PID/stat``."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended between listdir and open
        table[int(entry)] = (int(fields[1]), int(fields[21]) * PAGE)
    return table


def tree_rss(root: int) -> dict[int, int]:
    """``{pid: resident bytes}`` of ``root`` and all its descendants."""
    table = proc_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    sizes = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            sizes[pid] = table[pid][1]
        stack += children.get(pid, [])
    return sizes


def is_sdk_worker(pid: int) -> bool:
    """Whether ``pid`` runs a Beam SDK worker (``...sdk_worker_main``); False once it has ended."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"sdk_worker_main" in handle.read()
    except OSError:
        return False


def run_measured(command: list[str], cwd: Path, env: dict, log: Path, poll_s: float) -> dict:
    """Run ``command``; return its exit code, wall and CPU seconds and peak resident memory.

    Peaks (MB): the largest single process of the tree, the whole tree, the command's own process
    (the runner's driver, which holds the DirectRunner's in-memory shuffles) and the largest SDK
    worker process; ``largest_process`` says whether the overall peak was the ``driver``, a
    ``worker`` or another descendant. stdout and stderr go to ``log``. CPU is the ``wait4`` rusage of
    the child, which includes every descendant it waited for (the DirectRunner reaps its workers).
    """
    started = time.monotonic()
    workers: dict[int, bool] = {}
    peaks = {"largest": 0, "tree": 0, "driver": 0, "worker": 0}
    largest_role = None
    with open(log, "wb") as out:
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            sizes = tree_rss(child.pid)
            for proc in sizes.keys() - workers.keys():
                workers[proc] = is_sdk_worker(proc)
            if sizes:
                top = max(sizes, key=sizes.get)
                if sizes[top] > peaks["largest"]:
                    peaks["largest"] = sizes[top]
                    largest_role = "driver" if top == child.pid else "worker" if workers[top] else "other"
            peaks["tree"] = max(peaks["tree"], sum(sizes.values()))
            peaks["driver"] = max(peaks["driver"], sizes.get(child.pid, 0))
            peaks["worker"] = max([peaks["worker"]] + [size for p, size in sizes.items() if workers[p]])
            time.sleep(poll_s)
        child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": child.returncode,
        "wall_s": round(time.monotonic() - started, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_largest_mb": round(peaks["largest"] / 2**20, 1),
        "peak_rss_tree_mb": round(peaks["tree"] / 2**20, 1),
        "peak_rss_driver_mb": round(peaks["driver"] / 2**20, 1),
        "peak_rss_worker_mb": round(peaks["worker"] / 2**20, 1),
        "largest_process": largest_role,
        # ru_maxrss (KiB) of the largest reaped descendant: a check on the polled figure.
        "maxrss_reaped_mb": round(usage.ru_maxrss / 1024, 1),
    }


# ---------------------------------------------------------------- manifest


def reconciles(counts: dict) -> bool:
    """Rows, items and users each add up: read/seen == used/encoded/kept + every dropped reason."""
    return (
        counts["rows_read"] == counts["rows_used"] + sum(counts["rows_dropped"].values())
        and counts["items_seen"] == counts["items_encoded"] + sum(counts["items_failed"].values())
        and counts["users_seen"] == counts["users_kept"] + sum(counts["users_dropped"].values())
    )


def last_error(log: Path) -> str | None:
    """The last line of ``log`` that names an exception (``...Error: ...``), if any."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if "Error" in line]
    return lines[-1].strip()[-500:] if lines else None


def ingest(
    code: Code, inputs: list[str], output: Path, workers: int, poll_s: float, *, nightly_run: int = 0
) -> dict:
    """One ingest of ``inputs`` (project CLI arguments) into ``output`` with ``code``; its figures.

    ``nightly_run`` n > 0: ``output`` is a dataset root (``--dataset-root``, kept as it is) and this is
    its n-th run; the figures are those of the version it published.
    """
    if not nightly_run:
        shutil.rmtree(output, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pipeline.main",
        *inputs,
        f"--dataset-root={output}" if nightly_run else f"--output={output}",
        "--quiet",
        "--runner=FnApiRunner",
        f"--direct_num_workers={workers}",
        "--direct_running_mode=multi_processing",
    ]
    env = {**os.environ, "PYTHONPATH": str(code.root)}
    log = output.parent / f"{output.name}{f'-run{nightly_run}' if nightly_run else ''}.log"
    run = run_measured(command, code.root, env, log, poll_s)
    folder = output
    if nightly_run and run["returncode"] == 0:
        folder = output / "versions" / (output / "LATEST").read_text().strip()
        stats = json.loads((folder / "run_stats.json").read_text())
        run.update({key: value for key, value in stats.items() if key.startswith("videos_")})
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    counts = manifest["counts"] if manifest else None
    run.update(
        code=code.label,
        log=str(log),
        counts=counts,
        reconciled=run["returncode"] == 0 and counts is not None and reconciles(counts),
        error=None if run["returncode"] == 0 else last_error(log),
    )
    if counts:
        run["rows_per_s"] = round(counts["rows_read"] / run["wall_s"], 1)
        run["videos_per_s"] = round(counts["items_encoded"] / run["wall_s"], 2)
        shards = manifest.get("shards", {})
        run["item_shard_bytes"] = sum(s["bytes"] for s in shards.get("items", []))
        run["train_shard_bytes"] = sum(s["bytes"] for s in shards.get("train", []))
    return run


# ---------------------------------------------------------------- inputs


def id_only_input(scratch: Path, rows: int, rows_per_user_mean: float, items: int, seed: int) -> dict:
    """The gen_logs CSV for ``rows`` (written once, then reused) and its shape."""
    users = round(rows / rows_per_user_mean)
    path = scratch / f"pairs-{rows}r-{users}u-{items}i-s{seed}.csv"
    if not path.exists():
        partial = path.with_suffix(".partial")
        generate(LogShape(rows=rows, users=users, items=items, seed=seed), partial)
        partial.rename(path)
    return {"csv": path, "rows": rows, "users": users, "items": items}


def parquet_input(csv_data: dict) -> Path:
    """The rows of ``csv_data``'s CSV (``id_only_input``) as one Parquet file beside it (written once,
    then reused): integer columns ``user``, ``item``, ``timestamp``, row groups of 2^20 rows.

    Converted in a child process: the table (about 1.2 GB at 10M rows) must not stay in this process,
    whose size at fork would otherwise show in each run's ``maxrss_reaped_mb``."""
    path = csv_data["csv"].with_suffix(".parquet")
    if not path.exists():
        partial = path.with_suffix(".partial")
        convert = (
            "import sys, pyarrow.csv as c, pyarrow.parquet as q; "
            "q.write_table(c.read_csv(sys.argv[1]), sys.argv[2], row_group_size=1 << 20)"
        )
        subprocess.run([sys.executable, "-c", convert, str(csv_data["csv"]), str(partial)], check=True)
        partial.rename(path)
    return path


def nightly_input(
    scratch: Path, rows: int, rows_per_user_mean: float, items: int, seed: int, pool: int
) -> dict:
    """The gen_logs log of ``rows`` rows, a second log of ``rows / 10`` new rows (another seed, so
    ``users / 10`` of the same user IDs get more rows, over the same items), and a video folder with
    one ``{item}.mp4`` per item: hard links to ``pool`` small synth videos, cycled (reused)."""
    base = id_only_input(scratch, rows, rows_per_user_mean, items, seed)
    new_rows = id_only_input(scratch, rows // 10, rows_per_user_mean, items, seed + 1)
    folder = scratch / f"videos-{items}i-{pool}p-s{seed}"
    if not folder.exists():
        pool_videos = sorted(video_input(scratch, pool, seed)["videos_dir"].glob("*.mp4"))
        partial = folder.with_name(f"{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for item in range(1, items + 1):
            os.link(pool_videos[(item - 1) % len(pool_videos)], partial / f"{item}.mp4")
        partial.rename(folder)
    return {"csv": base["csv"], "new_rows_csv": new_rows["csv"], "videos_dir": folder}


def video_input(scratch: Path, videos: int, seed: int) -> dict:
    """A ``videorec synth`` dataset of ``videos`` small videos and 2 users per video (reused)."""
    folder = scratch / f"synth-{videos}v-s{seed}"
    if not (folder / "synth.json").exists():
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "synth", "--out", str(folder), "--overwrite"]
            + ["--items", str(videos), "--users", str(2 * videos), "--seed", str(seed)]
            + ["--sizes", "64x64", "--min-seconds", "1", "--max-seconds", "2", "--fps", "10"],
            cwd=REPO,
            check=True,
        )
    return {"csv": folder / "pairs.csv", "videos_dir": folder / "videos", "videos": videos}


def ensure_worktree(ref: str, path: Path) -> Code:
    """A detached ``git worktree`` of ``ref`` at ``path`` (created once, then checked and reused)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=REPO, capture_output=True, text=True
    )
    if commit.returncode:
        raise SystemExit(f"bench_scale: unknown git ref {ref!r}")
    commit = commit.stdout.strip()
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True
    ).stdout.strip()
    if head != commit:
        raise SystemExit(f"bench_scale: {path} is at {head[:12]}, not {ref} ({commit[:12]}); remove it first")
    return Code(f"baseline {ref}", path)


# ---------------------------------------------------------------- analysis


def linear_fit(xs: list[float], ys: list[float]) -> dict | None:
    """Least squares ``y = fixed + slope * x`` and the largest residual relative to ``y`` (None below 2 points)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    fixed = mean_y - slope * mean_x
    residuals = [abs(y - (fixed + slope * x)) / y for x, y in zip(xs, ys, strict=True)]
    return {"fixed": fixed, "slope": slope, "max_relative_residual": round(max(residuals), 4)}


def fits(runs: list[dict], x_key: str) -> dict:
    """Linear fits of wall, CPU and the peak RSS figures against ``x_key`` over reconciled runs."""
    good = [r for r in runs if r["reconciled"]]
    xs = [r[x_key] for r in good]
    return {
        "points": len(good),
        "wall_s": linear_fit(xs, [r["wall_s"] for r in good]),
        "cpu_s": linear_fit(xs, [r["cpu_s"] for r in good]),
        "peak_rss_largest_mb": linear_fit(xs, [r["peak_rss_largest_mb"] for r in good]),
        "peak_rss_driver_mb": linear_fit(xs, [r["peak_rss_driver_mb"] for r in good]),
        "peak_rss_worker_mb": linear_fit(xs, [r["peak_rss_worker_mb"] for r in good]),
    }


def real_video_sample(scratch: Path, repeats: int = 4) -> dict:
    """CPU s/video and JPEG bytes/item of ``videorec frames`` at 224 px (squash, 5 frames, 1 thread) on
    the real MicroLens clips in ../shared/data/videos; raises when they are absent (no silent stand-in).

    CPU per video is the slope between one command over the clips once and one over them ``repeats``
    times, so Python's start-up is not counted.
    """
    videos = sorted(str(p) for p in REAL_VIDEOS.glob("microlens50k_via_sananm__*.mp4"))
    if not videos:
        raise FileNotFoundError(f"no real MicroLens clips in {REAL_VIDEOS}")
    out = scratch / "frames-224"

    def frames_cpu(uris: list[str]) -> float:
        shutil.rmtree(out, ignore_errors=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "frames", *uris, "--out", str(out)]
            + ["--size", "224", "--resize", "squash", "--threads", "1"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    once = frames_cpu(videos)
    jpeg_bytes = sum(p.stat().st_size for p in out.glob("*.jpg"))
    many = frames_cpu(videos * repeats)
    return {
        "videos": [Path(v).name for v in videos],
        "cpu_s_per_video": round((many - once) / (len(videos) * (repeats - 1)), 3),
        "jpeg_bytes_per_item": round(jpeg_bytes / len(videos)),
    }


def shuffle_record_bytes() -> int:
    """Bytes of one interaction keyed by user, at full-MicroLens ID widths, in Beam's FastPrimitivesCoder:
    ``(user, (user, item, timestamp, file_index, row, column))`` as plain tuples (a lower bound: a
    NamedTuple is pickled, which adds its class path)."""
    from apache_beam.coders.coders import FastPrimitivesCoder

    user, item = "34500000", "1140000"
    return len(FastPrimitivesCoder().encode((user, (user, item, 1_672_531_200, 0, 999_999_999, 0))))


def mean_window_items(interactions: int, users: int) -> float:
    """Mean training-window length ``min(n - 2, max_seq_len + 1)`` over users whose row counts ``n``
    follow gen_logs's law (5 + log-normal share) at ``interactions / users`` rows per user."""
    sample = 1_000_000
    shape = LogShape(rows=round(sample * interactions / users), users=sample, items=1)
    counts = rows_per_user(shape, np.random.default_rng(0))
    return float(np.minimum(counts - 2, MAX_SEQ_LEN + 1).mean())


def project_dataflow(id_fit: dict, video_fit: dict | None, real: dict, workers_local: int) -> dict:
    """Dataflow figures for full MicroLens from the measured per-element costs.

    - CPU: ``interactions x per_row_cpu`` (slope of tree CPU s vs rows, ID-only) plus ``videos x
      (per_video_cpu + real_decode_cpu)``: the slope of tree CPU vs videos in the small-video runs
      (Beam, sampler set-up, shards and tables at 224 px, on 64x64 clips) plus ``videorec frames`` CPU
      per real MicroLens HEVC 720p clip at 224 px. Dataflow runs the same Python per element; the
      DirectRunner's own grouping is counted too, so this over-counts what Dataflow Shuffle does.
    - Worker memory: the largest SDK worker process's peak RSS fitted linearly against rows, at 1B
      rows, times the SDK processes of a worker (Dataflow starts one per vCPU). The DirectRunner's
      driver, which holds every in-memory shuffle, has no Dataflow counterpart (Dataflow Shuffle).
    - Shuffle: ``interactions x record bytes x 3`` (rows grouped by user, then per-row item IDs in
      two more passes: item counts and needed items).
    - Item shards: ``videos x JPEG bytes per item`` (5 frames at 224 px, measured on the real clips;
      tar headers and JSON add about 3 KB per item). Train shards repeat each item's frames for
      every user window holding it: ``users x mean window x bytes per item``.
    """
    n, v, u = MICROLENS["interactions"], MICROLENS["videos"], MICROLENS["users"]
    per_row = id_fit["cpu_s"]["slope"]
    per_video = video_fit["cpu_s"]["slope"] if video_fit and video_fit["cpu_s"] else None
    cpu_s = n * per_row + v * ((per_video or 0.0) + real["cpu_s_per_video"])
    vcpu_hours = cpu_s / 3600
    rss = id_fit["peak_rss_worker_mb"]
    process_gb = (rss["fixed"] + rss["slope"] * n) / 1024
    worker_gb = process_gb * WORKER["vcpus"]
    workers = max(1, math.ceil(vcpu_hours / (WORKER["vcpus"] * TARGET_HOURS)))
    worker_hours = vcpu_hours / WORKER["vcpus"]
    shuffle_gb = n * shuffle_record_bytes() * 3 / 1e9
    item_gb = v * (real["jpeg_bytes_per_item"] + 3_000) / 1e9
    window = mean_window_items(n, u)
    train_gb = u * window * real["jpeg_bytes_per_item"] / 1e9
    cost_compute = (
        vcpu_hours * PRICES["dataflow_batch_vcpu_hour"]
        + worker_hours * WORKER["memory_gb"] * PRICES["dataflow_batch_memory_gb_hour"]
        + worker_hours * WORKER["disk_gb"] * PRICES["dataflow_pd_standard_gb_hour"]
    )
    return {
        "target": MICROLENS,
        "prices_usd": PRICES,
        "worker": WORKER,
        "measured_per_element": {
            "cpu_s_per_row": per_row,
            "cpu_s_per_video_pipeline": per_video,
            "cpu_s_per_real_video_decode_224px": real["cpu_s_per_video"],
            "jpeg_bytes_per_item_224px": real["jpeg_bytes_per_item"],
            "local_workers": workers_local,
        },
        "vcpu_hours": round(vcpu_hours, 1),
        "vcpu_hours_rows": round(n * per_row / 3600, 1),
        "vcpu_hours_videos": round(v * ((per_video or 0.0) + real["cpu_s_per_video"]) / 3600, 1),
        "sdk_process_gb_at_1b_rows": round(process_gb, 2),
        "worker_memory_gb_needed": round(worker_gb, 1),
        "fits_worker": worker_gb <= WORKER["memory_gb"] * 0.8,
        "max_workers_for_target_hours": workers,
        "target_hours": TARGET_HOURS,
        "shuffle_gb": round(shuffle_gb, 1),
        "shuffle_record_bytes": shuffle_record_bytes(),
        "item_shard_gb": round(item_gb, 1),
        "mean_window_items": round(window, 2),
        "train_shard_gb": round(train_gb, 1),
        "train_over_item_shards": round(train_gb / item_gb, 1),
        "cost_usd": {
            "compute": round(cost_compute, 2),
            "shuffle": round(shuffle_gb * PRICES["dataflow_shuffle_gb"], 2),
            "item_shards_per_month": round(item_gb * PRICES["gcs_standard_gb_month"], 2),
            "train_shards_per_month": round(train_gb * PRICES["gcs_standard_gb_month"], 2),
        },
        "video_pipeline_cost_measured": per_video is not None,
    }


def dataflow_flags(project: str, region: str, bucket: str, image: str, max_workers: int) -> list[str]:
    """The Beam flags a user adds to ``videorec ingest`` for the full-MicroLens run on Dataflow."""
    return [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={region}",
        f"--temp_location=gs://{bucket}/temp",
        f"--staging_location=gs://{bucket}/staging",
        f"--sdk_container_image={image}",
        "--sdk_location=container",
        f"--machine_type={WORKER['machine_type']}",
        f"--disk_size_gb={WORKER['disk_gb']}",
        f"--max_num_workers={max_workers}",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        "--experiments=shuffle_mode=service",
        "--experiments=use_runner_v2",
    ]


# ---------------------------------------------------------------- report


def row_line(run: dict, size_key: str) -> str:
    counts = run.get("counts") or {}
    rate = run.get("rows_per_s") if size_key == "rows" else run.get("videos_per_s")
    status = "yes" if run["reconciled"] else f"**NO** ({run['error'] or 'no manifest'})"
    return (
        f"| {run['code']} | {run[size_key]:,} | {counts.get('users_seen', '-')} | {run['wall_s']:.1f} | "
        f"{run['cpu_s']:.0f} | {rate if rate is not None else '-'} | {run['peak_rss_largest_mb']:.0f} | "
        f"{run['peak_rss_driver_mb']:.0f} | {run['peak_rss_worker_mb']:.0f} | {run['peak_rss_tree_mb']:.0f} | "
        f"{run['largest_process']} | {status} |"
    )


def fit_line(label: str, fit: dict, unit: str) -> str:
    wall = fit["wall_s"]
    if wall is None:
        return f"- {label}: fewer than two reconciled sizes, no fit"
    rss = fit["peak_rss_largest_mb"]
    worker, driver = fit["peak_rss_worker_mb"], fit["peak_rss_driver_mb"]
    return (
        f"- {label}: wall = {wall['fixed']:.1f} s + {wall['slope'] * 1e6:.1f} s per million {unit} "
        f"(largest residual {wall['max_relative_residual']:.1%}); CPU {fit['cpu_s']['slope'] * 1e3:.3f} ms per "
        f"{unit[:-1]}; peak RSS per million {unit}: largest process +{rss['slope'] * 1e6:.1f} MB "
        f"(from {rss['fixed']:.0f}), driver +{driver['slope'] * 1e6:.1f} MB, SDK worker +{worker['slope'] * 1e6:.1f} MB"
    )


def parquet_ratios(runs: list[dict]) -> list[str]:
    """One line per size: the Parquet run's largest process and wall time over the CSV run's."""
    lines = []
    for rows in sorted({r["rows"] for r in runs}):
        by = {r["format"]: r for r in runs if r["rows"] == rows}
        if {"csv", "parquet"} <= by.keys() and by["csv"]["peak_rss_largest_mb"] and by["csv"]["wall_s"]:
            rss = by["parquet"]["peak_rss_largest_mb"] / by["csv"]["peak_rss_largest_mb"]
            wall = by["parquet"]["wall_s"] / by["csv"]["wall_s"]
            lines.append(f"- {rows:,} rows: Parquet / CSV largest process x{rss:.2f}, wall x{wall:.2f}")
    return lines


def nightly_runs(code: Code, data: dict, root: Path, workers: int, poll_s: float) -> list[dict]:
    """A first run on a new dataset root, then a nightly run with the 10 % new rows (no video changed:
    every one is reused), both measured; the root is removed afterwards (train shards embed frames)."""
    shutil.rmtree(root, ignore_errors=True)
    videos = [f"--videos={data['videos_dir']}", *NIGHTLY_FRAMES]
    runs = []
    for number, logs in enumerate(([data["csv"]], [data["csv"], data["new_rows_csv"]]), start=1):
        inputs = [f"--interactions={','.join(map(str, logs))}", *videos]
        runs.append({**ingest(code, inputs, root, workers, poll_s, nightly_run=number), "run": number})
    shutil.rmtree(root, ignore_errors=True)
    return runs


def nightly_line(run: dict) -> str:
    status = "yes" if run["reconciled"] else f"**NO** ({run['error'] or 'no manifest'})"
    return (
        f"| {run['code']} | {run['rows']:,} | {'first' if run['run'] == 1 else 'nightly'} | {run['wall_s']:.1f} | "
        f"{run['cpu_s']:.0f} | {run['peak_rss_largest_mb']:.0f} | {run['peak_rss_driver_mb']:.0f} | "
        f"{run['peak_rss_worker_mb']:.0f} | {run['peak_rss_tree_mb']:.0f} | {run['largest_process']} | "
        f"{run.get('videos_decoded', '-')} | {run.get('videos_reused', '-')} | {status} |"
    )


def nightly_ratios(runs: list[dict]) -> list[str]:
    """Per code version and run (first, nightly): the largest process at each size over the smallest size's."""
    lines = []
    for code in dict.fromkeys(r["code"] for r in runs):
        for number, name in ((1, "first run"), (2, "nightly run")):
            sized = sorted(
                (r["rows"], r["peak_rss_largest_mb"]) for r in runs if (r["code"], r["run"]) == (code, number)
            )
            for rows, rss in sized[1:]:
                lines.append(
                    f"- {code}, {name}: largest process x{rss / sized[0][1]:.2f} from {sized[0][0]:,} to {rows:,} rows"
                )
    return lines


def report(results: dict) -> str:
    lines = [
        f"workers {results['workers']}, {results['cpus']} CPUs, load average at start {results['load_at_start']}",
    ]
    if results["id_only"]:
        lines += [
            "",
            "| code | rows | users | wall s | CPU s | rows/s | peak RSS largest MB | driver MB | worker MB | tree MB | largest | reconciled |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(row_line(r, "rows") for r in results["id_only"]),
        ]
    if results.get("parquet"):
        lines += [
            "",
            "One Parquet file against the CSV of the same rows (project code, same run):",
            "",
            "| code | rows | users | wall s | CPU s | rows/s | peak RSS largest MB | driver MB | worker MB | tree MB | largest | reconciled |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(row_line({**r, "code": r["format"]}, "rows") for r in results["parquet"]),
            "",
            *parquet_ratios(results["parquet"]),
        ]
    if results.get("nightly"):
        lines += [
            "",
            "Nightly mode (--dataset-root with videos): a first run, then one with 10 % new rows:",
            "",
            "| code | rows | run | wall s | CPU s | peak RSS largest MB | driver MB | worker MB | tree MB | largest | decoded | reused | reconciled |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(nightly_line(r) for r in results["nightly"]),
            "",
            *nightly_ratios(results["nightly"]),
        ]
    if results["videos"]:
        lines += [
            "",
            "| code | videos | users | wall s | CPU s | videos/s | peak RSS largest MB | driver MB | worker MB | tree MB | largest | reconciled |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(row_line(r, "videos") for r in results["videos"]),
        ]
    lines.append("")
    for label, per in results["fits"].items():
        lines.append(fit_line(f"{label}, ID-only", per["id_only"], "rows"))
        if per.get("videos"):
            lines.append(fit_line(f"{label}, videos", per["videos"], "videos"))
    for label, projection in results["projection"].items():
        p = projection
        lines += [
            "",
            f"Dataflow projection for full MicroLens from {label}'s per-element costs:",
            f"- {p['vcpu_hours']} vCPU-hours ({p['vcpu_hours_rows']} for rows, {p['vcpu_hours_videos']} for videos); "
            f"max {p['max_workers_for_target_hours']} x {p['worker']['machine_type']} for {p['target_hours']} h",
            f"- largest SDK worker process at 1B rows {p['sdk_process_gb_at_1b_rows']} GB, "
            f"{p['worker_memory_gb_needed']} GB per {p['worker']['vcpus']}-vCPU worker "
            f"({'fits' if p['fits_worker'] else 'does NOT fit'} {p['worker']['memory_gb']} GB)",
            f"- shuffle {p['shuffle_gb']} GB; item shards {p['item_shard_gb']} GB; train shards "
            f"{p['train_shard_gb']} GB ({p['train_over_item_shards']}x, {p['mean_window_items']} items per window)",
            f"- cost: compute ${p['cost_usd']['compute']}, shuffle ${p['cost_usd']['shuffle']}, storage "
            f"${p['cost_usd']['item_shards_per_month']}/month items + ${p['cost_usd']['train_shards_per_month']}/month train",
        ]
        if not p["video_pipeline_cost_measured"]:
            lines.append(
                "- no --videos runs: videos are counted at their real decode cost only, without Beam's per-video work"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[200_000, 2_000_000, 10_000_000], help="rows (none: skip)"
    )
    parser.add_argument(
        "--rows-per-user", type=float, default=9.5, help="mean rows per user (issue 9: 1.9M/200k)"
    )
    parser.add_argument("--items", type=int, default=20_000, help="item catalogue, the same at every size")
    parser.add_argument("--videos", action="store_true", help="also the runs with videos")
    parser.add_argument("--video-sizes", type=int, nargs="+", default=[1_000, 4_000, 10_000])
    parser.add_argument(
        "--parquet", type=int, nargs="*", default=[], metavar="ROWS", help="one Parquet file against its CSV"
    )
    parser.add_argument(
        "--nightly",
        type=int,
        nargs="*",
        default=[],
        metavar="ROWS",
        help="a first and a nightly run on a root",
    )
    parser.add_argument("--nightly-pool", type=int, default=50, help="synth videos the nightly items share")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes")
    parser.add_argument("--baseline-ref", default=None, help="git ref to run the same sizes with")
    parser.add_argument("--baseline-only", action="store_true", help="run only the baseline ref")
    parser.add_argument("--worktree", type=Path, default=Path("/tmp/videorec-baseline"))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/videorec-scale"))
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between /proc samples")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.baseline_only and not args.baseline_ref:
        parser.error("--baseline-only needs --baseline-ref")

    args.scratch.mkdir(parents=True, exist_ok=True)
    codes = [] if args.baseline_only else [Code("project", REPO)]
    if args.baseline_ref:
        codes.append(ensure_worktree(args.baseline_ref, args.worktree))
    results: dict = {
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_at_start": round(os.getloadavg()[0], 2),
        "codes": {c.label: str(c.root) for c in codes},
        "id_only": [],
        "videos": [],
        "parquet": [],
        "nightly": [],
        "fits": {},
        "projection": {},
    }

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")

    for rows in args.sizes:
        data = id_only_input(args.scratch, rows, args.rows_per_user, args.items, args.seed)
        for code in codes:
            out = args.scratch / "out" / f"{code.label.split()[0]}-ids-{rows}"
            run = ingest(code, [f"--interactions={data['csv']}"], out, args.workers, args.poll)
            run.update(rows=rows)
            results["id_only"].append(run)
            print(row_line(run, "rows"), flush=True)
            save()
    if args.videos:
        for videos in args.video_sizes:
            data = video_input(args.scratch, videos, args.seed)
            inputs = [f"--interactions={data['csv']}", f"--videos={data['videos_dir']}"]
            inputs += ["--frame-size=224", "--resize=squash"]
            for code in codes:
                out = args.scratch / "out" / f"{code.label.split()[0]}-videos-{videos}"
                run = ingest(code, inputs, out, args.workers, args.poll)
                run.update(videos=videos)
                results["videos"].append(run)
                print(row_line(run, "videos"), flush=True)
                save()

    for rows in args.parquet:
        data = id_only_input(args.scratch, rows, args.rows_per_user, args.items, args.seed)
        for fmt, path in (("csv", data["csv"]), ("parquet", parquet_input(data))):
            out = args.scratch / "out" / f"project-{fmt}-{rows}"
            run = ingest(Code("project", REPO), [f"--interactions={path}"], out, args.workers, args.poll)
            run.update(rows=rows, format=fmt)
            results["parquet"].append(run)
            print(row_line({**run, "code": fmt}, "rows"), flush=True)
            save()
    for rows in args.nightly:
        data = nightly_input(args.scratch, rows, args.rows_per_user, args.items, args.seed, args.nightly_pool)
        for code in codes:
            root = args.scratch / "out" / f"{code.label.split()[0]}-nightly-{rows}"
            for run in nightly_runs(code, data, root, args.workers, args.poll):
                results["nightly"].append({**run, "rows": rows})
                print(nightly_line(results["nightly"][-1]), flush=True)
                save()
    if not results["id_only"] and not results["videos"]:
        print()
        print(report(results))
        return 0 if all(r["reconciled"] for r in results["parquet"] + results["nightly"]) else 1

    real = real_video_sample(args.scratch)
    results["real_video_sample"] = real
    for code in codes:
        per = {"id_only": fits([r for r in results["id_only"] if r["code"] == code.label], "rows")}
        if args.videos:
            per["videos"] = fits([r for r in results["videos"] if r["code"] == code.label], "videos")
        results["fits"][code.label] = per
        if per["id_only"]["cpu_s"] is not None:
            projection = project_dataflow(per["id_only"], per.get("videos"), real, args.workers)
            projection["flags"] = dataflow_flags(
                "PROJECT",
                "us-central1",
                "BUCKET",
                "REGION-docker.pkg.dev/PROJECT/videorec/videorec-ingest:TAG",
                projection["max_workers_for_target_hours"],
            )
            results["projection"][code.label] = projection
    save()
    print()
    print(report(results))
    return 0 if all(r["reconciled"] for r in results["id_only"] + results["videos"]) else 1


if __name__ == "__main__":
    sys.exit(main())
