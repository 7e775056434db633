"""Incremental re-ingestion end to end: ``videorec ingest --dataset-root`` runs on synth data.

- 10 % new videos and interactions plus 2 re-encoded videos: the second run decodes exactly those
  (Beam counters), and its dataset equals a from-scratch run on the same inputs;
- a no-change re-run decodes nothing and writes the same dataset again; ``--keep`` prunes;
- a real ingest process SIGKILLed midway leaves ``LATEST`` on the last good version, and the next
  run breaks its dead lease and publishes; two real ingest processes racing on one root publish once;
- the same incremental scenario with inputs and dataset root on ``gs://`` (GCS API emulator).

The retry of items that failed last time, with attempt counts, is tested in tests/test_ingest.py
(``test_incremental_runs_reuse_frames_of_unchanged_videos``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import versions
from pipeline.ingest_job import IngestResult, run
from pipeline.synth import SynthConfig, generate
from tests.dataset_files import dataset_table
from transforms import storage

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    "--frame-size",
    "32",
    "--train-frames",
    "embedded",
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
    "--quiet",
]
"""Embedded train shards: a nightly version that copies reused frames equals a from-scratch run byte
for byte. The reference layout indexes them in place instead (tests/test_train_layout.py)."""
VERSION_FIELDS = {"dataset_version"}
"""Manifest fields that name the version and so differ between equal datasets."""
NOT_CONTENT = {"run_stats.json"}
"""Files of a version folder that describe the run (wall time), not the dataset."""


def videos_decoded(result: IngestResult) -> int:
    """Videos the job ran the decoder on, from its Beam counters (decoded + rejected by the decoder)."""
    return sum(
        count
        for name, count in result.counters.items()
        if name == "videos_decoded" or name.startswith("videos_failed_")
    )


def dataset_content(version: str | Path) -> dict:
    """sha256 of every file of a version except the run's stats, plus its manifest minus its id."""
    version = Path(version)
    files = {
        str(path.relative_to(version)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(version.rglob("*"))
        if path.is_file() and path.name not in NOT_CONTENT | {"manifest.json"}
    }
    manifest = json.loads((version / "manifest.json").read_text())
    return {"files": files, "manifest": {k: v for k, v in manifest.items() if k not in VERSION_FIELDS}}


def append_interactions(pairs: Path, new_items: list[str], old_items: list[str], fraction: float) -> int:
    """Append ``fraction`` more rows to ``pairs`` from new users who watch the new items and some old
    ones (5 interactions each, later than every existing row); returns the number of rows added."""
    lines = pairs.read_text().splitlines()
    latest = max(int(line.split(",")[2]) for line in lines[1:])
    added = []
    for user in range(math.ceil(fraction * (len(lines) - 1) / 5)):
        watched = [new_items[user % len(new_items)], *old_items[user : user + 3], new_items[-1]]
        added += [f"new{user},{item},{latest + 1000 * (user * 10 + k + 1)}" for k, item in enumerate(watched)]
    pairs.write_text("\n".join(lines + added) + "\n")
    return len(added)


@pytest.fixture(scope="module")
def donor(tmp_path_factory) -> Path:
    """A second synth set whose videos serve as new items and as re-encoded content."""
    out = tmp_path_factory.mktemp("donor")
    config = SynthConfig(
        users=5,
        items=4,
        categories=2,
        min_interactions=3,
        max_interactions=4,
        seed=12,
        min_seconds=1.0,
        max_seconds=1.0,
    )
    generate(out, config, workers=2)
    return out


@dataclass
class Scenario:
    first: IngestResult
    second: IngestResult
    from_scratch: IngestResult
    no_change: IngestResult
    root: str
    new_items: list[str]
    changed_items: list[str]
    rows_added: int
    rows_before: int


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, donor) -> Scenario:
    inputs = tmp_path_factory.mktemp("inputs")
    generate(
        inputs,
        SynthConfig(users=30, items=20, seed=11, max_interactions=10, min_seconds=1.0, max_seconds=1.0),
        workers=2,
    )
    root = str(tmp_path_factory.mktemp("root"))
    args = ["--interactions", str(inputs / "pairs.csv"), "--videos", str(inputs / "videos"), *QUICK]
    first = run([*args, "--dataset-root", root])

    encoded = dataset_table(Path(first.output), "items").column("item_id").to_pylist()
    new_items, changed_items = ["21", "22"], sorted(encoded)[:2]
    for item, donor_item in zip(new_items + changed_items, ["1", "2", "3", "4"], strict=True):
        shutil.copyfile(donor / "videos" / f"{donor_item}.mp4", inputs / "videos" / f"{item}.mp4")
    rows_before = len((inputs / "pairs.csv").read_text().splitlines()) - 1
    rows_added = append_interactions(inputs / "pairs.csv", new_items, sorted(encoded)[5:], 0.10)

    second = run([*args, "--dataset-root", root])
    from_scratch = run([*args, "--dataset-root", str(tmp_path_factory.mktemp("scratch_root"))])
    no_change = run([*args, "--dataset-root", root])
    return Scenario(
        first, second, from_scratch, no_change, root, new_items, changed_items, rows_added, rows_before
    )


def test_second_run_decodes_exactly_the_new_and_changed_videos(scenario):
    assert scenario.rows_added >= 0.1 * scenario.rows_before
    assert videos_decoded(scenario.first) == scenario.first.manifest["counts"]["items_encoded"] == 20
    second = scenario.second
    assert videos_decoded(second) == len(scenario.new_items) + len(scenario.changed_items) == 4
    assert second.counters["items_reused"] == 20 - len(scenario.changed_items)
    assert second.manifest["counts"]["items_encoded"] == 22

    fingerprints = [
        {row["item_id"]: row["fingerprint"] for row in dataset_table(Path(r.output), "items").to_pylist()}
        for r in (scenario.first, second)
    ]
    changed = {item for item in fingerprints[0] if fingerprints[0][item] != fingerprints[1][item]}
    assert changed == set(scenario.changed_items)


def test_incremental_output_equals_a_from_scratch_run(scenario):
    assert videos_decoded(scenario.from_scratch) == 22
    incremental, scratch = (
        dataset_content(scenario.second.output),
        dataset_content(scenario.from_scratch.output),
    )
    assert incremental["files"] == scratch["files"]
    assert incremental["manifest"] == scratch["manifest"]
    assert scenario.second.manifest["dataset_version"] != scenario.from_scratch.manifest["dataset_version"]


def test_no_change_run_decodes_nothing_and_repeats_the_dataset(scenario):
    assert videos_decoded(scenario.no_change) == 0
    assert scenario.no_change.counters["items_reused"] == 22
    assert dataset_content(scenario.no_change.output) == dataset_content(scenario.second.output)
    assert versions.latest_version_id(scenario.root) == Path(scenario.no_change.output).name


def test_old_versions_stay_until_pruned_with_keep(scenario, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(scenario.root, root)
    ids = [Path(r.output).name for r in (scenario.first, scenario.second, scenario.no_change)]
    assert versions.list_versions(root) == ids
    assert versions.prune(root, keep=2) == ids[:1]
    assert versions.list_versions(root) == ids[1:]
    assert versions.validate_manifest(versions.resolve_latest(root))["dataset_version"] == ids[2]


def test_keep_flag_prunes_after_publishing(donor, tmp_path):
    root = str(tmp_path / "root")
    args = ["--interactions", str(donor / "pairs.csv"), "--min-user-interactions", "3", *QUICK]
    for _ in range(3):
        run([*args, "--dataset-root", root, "--keep", "2"])
    assert len(versions.list_versions(root)) == 2
    assert versions.list_versions(root)[-1] == versions.latest_version_id(root)
    with pytest.raises(SystemExit):
        run([*args, "--output", str(tmp_path / "o"), "--keep", "2"])


# ---------------------------------------------------------------------------------------------
# Real ingest processes: killed midway, racing
# ---------------------------------------------------------------------------------------------


def ingest_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ingest", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_until_writing(root: Path, process: subprocess.Popen, timeout_s: float = 120) -> versions.RunLease:
    """The lease of the ingest ``process`` once a first file of its version exists."""
    deadline = time.monotonic() + timeout_s
    lease = None
    while lease is None or not any(p.is_file() for p in (root / "versions" / lease.version_id).rglob("*")):
        assert process.poll() is None, f"ingest ended before writing: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "ingest wrote nothing in time"
        lease = lease or versions.read_lease(root)
        time.sleep(0.005)
    return lease


def test_ingest_killed_midway_leaves_latest_and_the_next_run_publishes(scenario, tmp_path, caplog):
    """The killed run decodes 22 videos (its base is ID-only), so it is caught while writing frames.
    Its process is gone, so the next run on this host breaks its lease at once (no wait for the TTL)."""
    inputs = Path(scenario.first.manifest["config"]["interactions"]).parent
    root = tmp_path / "root"
    id_only = ["--interactions", str(inputs / "pairs.csv"), *QUICK]
    good = run([*id_only, "--dataset-root", str(root)])

    killed = ingest_process(
        *id_only, "--videos", str(inputs / "videos"), "--dataset-root", str(root), "--lease-ttl", "600"
    )
    lease = wait_until_writing(root, killed)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()

    assert versions.latest_version_id(root) == good.manifest["dataset_version"]
    versions.validate_manifest(versions.resolve_latest(root))
    assert not (root / "versions" / lease.version_id / "manifest.json").exists()

    assert lease.expires_at > time.time() + 60 and versions.holder_is_dead(lease)
    after = run([*id_only, "--dataset-root", str(root), "--keep", "1"])
    assert f"breaking the lease of run {lease.run_id}" in caplog.text
    assert versions.latest_version_id(root) == after.manifest["dataset_version"]
    assert versions.list_versions(root) == [after.manifest["dataset_version"]], "--keep 1 pruned the rest"
    assert versions.read_lease(root) is None


def test_two_racing_ingest_runs_publish_once(scenario, tmp_path):
    """Both start from an empty root; the winner decodes 22 videos, so the runs surely overlap."""
    inputs = Path(scenario.first.manifest["config"]["interactions"]).parent
    root = tmp_path / "root"
    args = ["--interactions", str(inputs / "pairs.csv"), "--videos", str(inputs / "videos"), *QUICK]
    racers = [ingest_process(*args, "--dataset-root", str(root)) for _ in range(2)]
    outcomes = [(racer.wait(timeout=300), racer.communicate()[1]) for racer in racers]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 3], outcomes
    (loser_err,) = [err for code, err in outcomes if code == 3]
    assert "videorec ingest: error:" in loser_err and "Traceback" not in loser_err
    assert "is being written by run" in loser_err or "another run took" in loser_err
    (published,) = versions.list_versions(root)
    assert versions.latest_version_id(root) == published
    versions.validate_manifest(versions.resolve_latest(root))
    assert versions.read_lease(root) is None


# ---------------------------------------------------------------------------------------------
# GCS (emulator)
# ---------------------------------------------------------------------------------------------


@pytest.mark.gcs
def test_incremental_runs_on_gcs(gcs_emulator, donor):
    bucket = gcs_emulator.make_bucket("videorec-incremental")
    for path in [donor / "pairs.csv", *sorted((donor / "videos").iterdir())]:
        bucket.blob(f"in/{path.relative_to(donor)}").upload_from_filename(str(path))
    root = "gs://videorec-incremental/datasets/synth"
    args = [
        "--interactions=gs://videorec-incremental/in/pairs.csv",
        "--videos=gs://videorec-incremental/in/videos",
        f"--dataset-root={root}",
        "--min-user-interactions=3",
        *QUICK,
    ]
    first = run(args)
    assert videos_decoded(first) == first.manifest["counts"]["items_encoded"] == 4

    # Identical bytes uploaded again keep their MD5: not a change. Other bytes are.
    bucket.blob("in/videos/1.mp4").upload_from_filename(str(donor / "videos" / "1.mp4"))
    bucket.blob("in/videos/2.mp4").upload_from_filename(str(donor / "videos" / "3.mp4"))
    bucket.blob("in/videos/5.mp4").upload_from_filename(str(donor / "videos" / "4.mp4"))
    pairs = (donor / "pairs.csv").read_text().rstrip("\n").splitlines()
    pairs += [f"new,{item},{2 * 10**12 + k}" for k, item in enumerate([5, 1, 2, 5])]
    bucket.blob("in/pairs.csv").upload_from_string("\n".join(pairs) + "\n")

    second = run(args)
    assert videos_decoded(second) == 2 and second.counters["items_reused"] == 3
    third = run(args)
    assert videos_decoded(third) == 0 and third.counters["items_reused"] == 5
    assert versions.latest_version_id(root) == third.manifest["dataset_version"]
    versions.validate_manifest(versions.resolve_latest(root))
    for kind in ("items", "train"):
        for shard in third.manifest["shards"][kind]:
            assert storage.read_whole_file(f"{third.output}/{shard['path']}") == storage.read_whole_file(
                f"{second.output}/{shard['path']}"
            )
