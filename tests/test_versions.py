"""Dataset roots (pipeline/versions/): validation, compare-and-swap publishing, leases, pruning.

Racing and kill-midway behaviour is exercised with real OS processes on local paths (the GCS emulator
ignores ``ifGenerationMatch``, so it cannot show the GCS precondition; the GCS tests cover the rest of
the GCS code path against the emulator's real API).
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from blobstore.gcs import gcs_client, split_gcs_url
from pipeline import versions
from pipeline.versions import (
    InvalidVersion,
    LeaseLost,
    PublishConflict,
    RootBusy,
    acquire_run_lease,
    finish_run,
    folders,
    latest_version_id,
    list_versions,
    new_version_id,
    prune,
    publish,
    read_lease,
    release_run_lease,
    renew_run_lease,
    resolve_latest,
    validate_manifest,
    version_url,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Helpers: write a small but real dataset version (tar shards + parquet-named tables + manifest)
# ---------------------------------------------------------------------------------------------


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def version_files(tag: str, shards: int = 2, reuse_items_from: str | None = None) -> dict[str, bytes]:
    """Every file of a version folder, keyed by relative path; manifest.json last."""
    files = {
        "tables/items/part-00000.parquet": f"items {tag}".encode(),
        "tables/sequences/part-00000.parquet": f"seq {tag}".encode(),
    }
    listed = {"items": [], "train": []}
    for kind in ("items", "train"):
        shard_tag = reuse_items_from if kind == "items" and reuse_items_from else tag
        for i in range(shards):
            data = _tar_bytes({f"{kind}_{i}.json": json.dumps({"tag": shard_tag, "i": i}).encode()})
            path = f"{kind}/{kind}-{i:06d}.tar"
            entry = {
                "path": path,
                "samples": 1,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            if kind == "items" and reuse_items_from is not None:
                entry["path"] = f"../{reuse_items_from}/{path}"
            else:
                files[path] = data
            listed[kind].append(entry)
    files["failures/part-00000.jsonl"] = b""

    def recorded(path):
        return {"path": path, "bytes": len(files[path]), "sha256": hashlib.sha256(files[path]).hexdigest()}

    nothing = {"rows_read": 0, "rows_used": 0, "items_seen": 0, "items_encoded": 0, "users_seen": 0}
    manifest = {
        "format_version": 2,
        "dataset_version": tag,
        "num_items": 0,
        "num_users": 0,
        "counts": {**nothing, "users_kept": 0, "rows_dropped": {}, "items_failed": {}, "users_dropped": {}},
        "tables": {
            "items": ["tables/items/part-00000.parquet"],
            "sequences": ["tables/sequences/part-00000.parquet"],
        },
        "table_files": {
            "items": [recorded("tables/items/part-00000.parquet")],
            "sequences": [recorded("tables/sequences/part-00000.parquet")],
        },
        "shards": listed,
        "failures": ["failures/part-00000.jsonl"],
        "failure_files": [recorded("failures/part-00000.jsonl")],
    }
    files["manifest.json"] = json.dumps(manifest, indent=1).encode()
    return files


def write_local_version(root: Path, version_id: str, only: dict | None = None, **kwargs) -> Path:
    folder = root / "versions" / version_id
    for rel, data in (only or version_files(version_id, **kwargs)).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def upload_version(root: str, version_id: str, only: dict | None = None, **kwargs) -> None:
    bucket_name, prefix = split_gcs_url(root)
    bucket = gcs_client().bucket(bucket_name)
    for rel, data in (only or version_files(version_id, **kwargs)).items():
        bucket.blob(f"{prefix}/versions/{version_id}/{rel}").upload_from_string(data)


def write_version(root: str | Path, version_id: str, **kwargs) -> None:
    """Write a version under a local or gs:// root, manifest.json last."""
    if str(root).startswith("gs://"):
        upload_version(str(root), version_id, **kwargs)
    else:
        write_local_version(Path(root), version_id, **kwargs)


def publish_new_version(root: str | Path, **kwargs) -> str:
    lease = acquire_run_lease(root, ttl_s=60)
    write_version(root, lease.version_id, **kwargs)
    publish(root, lease.version_id, lease.base_version, lease=lease)
    assert release_run_lease(lease)
    return lease.version_id


# ---------------------------------------------------------------------------------------------
# Ids, validation, publish
# ---------------------------------------------------------------------------------------------


def test_version_ids_are_unique_and_sort_by_creation_time():
    ids = []
    for _ in range(50):
        ids.append(new_version_id())
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    assert all("/" not in i for i in ids)


def test_validate_manifest_accepts_a_complete_version_and_lists_every_defect(tmp_path):
    folder = write_local_version(tmp_path, "v1")
    manifest = validate_manifest(folder)
    assert manifest["dataset_version"] == "v1"

    (folder / "train/train-000001.tar").unlink()
    with open(folder / "items/items-000000.tar", "ab") as handle:
        handle.write(b"x")
    data = bytearray((folder / "items/items-000001.tar").read_bytes())
    data[600] ^= 0xFF  # same size, different bytes
    (folder / "items/items-000001.tar").write_bytes(bytes(data))
    (folder / "tables/sequences/part-00000.parquet").unlink()
    with pytest.raises(InvalidVersion) as caught:
        validate_manifest(folder)
    problems = "\n".join(caught.value.problems)
    assert "train shard train/train-000001.tar is missing" in problems
    assert "items shard items/items-000000.tar: " in problems and "bytes, manifest says" in problems
    assert "items shard items/items-000001.tar: sha256 differs from the manifest" in problems
    assert "tables/sequences/part-00000.parquet is missing" in problems
    assert len(caught.value.problems) == 4
    (folder / "tables/sequences/part-00000.parquet").write_bytes(b"x")
    (folder / "tables/items/part-00000.parquet").write_bytes(
        b"items v2"
    )  # same size as recorded, other bytes
    with pytest.raises(InvalidVersion) as caught:
        validate_manifest(folder)
    problems = "\n".join(caught.value.problems)
    assert "table tables/sequences/part-00000.parquet: 1 bytes" in problems
    assert "table tables/items/part-00000.parquet: sha256 differs from the manifest" in problems
    # Sizes alone do not catch same-size corruption.
    with pytest.raises(InvalidVersion) as caught:
        validate_manifest(folder, verify_sha256=False)
    assert len(caught.value.problems) == 3


def test_validate_manifest_rejects_missing_or_garbled_manifest(tmp_path):
    with pytest.raises(InvalidVersion, match="manifest.json is missing"):
        validate_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidVersion, match="not a JSON manifest"):
        validate_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 2}')  # JSON, but not a sound manifest
    with pytest.raises(InvalidVersion, match="dataset_version is missing"):
        validate_manifest(tmp_path)


def test_first_publish_then_incremental_publish_reusing_shards(tmp_path):
    assert resolve_latest(tmp_path) is None
    first = publish_new_version(tmp_path)
    assert resolve_latest(tmp_path) == str(tmp_path / "versions" / first)
    assert (tmp_path / "LATEST").read_text() == f"{first}\n"

    second = publish_new_version(tmp_path, reuse_items_from=first)
    assert latest_version_id(tmp_path) == second
    assert not (tmp_path / "versions" / second / "items").exists()
    validate_manifest(version_url(tmp_path, second))


def test_publish_refuses_invalid_versions_and_stale_bases(tmp_path):
    first = publish_new_version(tmp_path)
    broken = new_version_id()
    folder = write_local_version(tmp_path, broken)
    (folder / "train/train-000000.tar").unlink()
    with pytest.raises(InvalidVersion):
        publish(tmp_path, broken, first)
    assert latest_version_id(tmp_path) == first

    late = new_version_id()
    write_local_version(tmp_path, late)
    with pytest.raises(PublishConflict, match="started from None"):
        publish(tmp_path, late, None)
    assert latest_version_id(tmp_path) == first


# ---------------------------------------------------------------------------------------------
# Leases
# ---------------------------------------------------------------------------------------------


def test_lease_excludes_a_second_run_until_released_or_expired(tmp_path):
    base = publish_new_version(tmp_path)
    lease = acquire_run_lease(tmp_path, ttl_s=60)
    assert lease.base_version == base
    assert read_lease(tmp_path) == lease
    with pytest.raises(RootBusy, match=lease.run_id):
        acquire_run_lease(tmp_path)
    renewed = renew_run_lease(lease, ttl_s=0.2)
    assert renewed.run_id == lease.run_id and renewed.expires_at < lease.expires_at
    time.sleep(0.3)
    # Expired: a new run takes over, and the old run can no longer publish.
    taker = acquire_run_lease(tmp_path, ttl_s=60)
    write_local_version(tmp_path, lease.version_id)
    with pytest.raises(LeaseLost):
        publish(tmp_path, lease.version_id, lease.base_version, lease=lease)
    assert release_run_lease(lease) is False
    assert release_run_lease(taker) is True
    assert read_lease(tmp_path) is None


def _lease_taken_by_a_process_that_exits(root: Path, held_by_process: bool) -> versions.RunLease:
    code = (
        "import sys; from pipeline.versions import acquire_run_lease; "
        f"print(acquire_run_lease(sys.argv[1], ttl_s=3600, held_by_process={held_by_process}).to_json())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return versions.RunLease.from_json(done.stdout.strip().splitlines()[-1])


def test_a_lease_whose_waiting_process_died_on_this_host_is_broken_at_once(tmp_path, caplog):
    base = publish_new_version(tmp_path)
    dead = _lease_taken_by_a_process_that_exits(tmp_path, held_by_process=True)
    assert dead.expires_at > time.time() + 3000 and versions.holder_is_dead(dead)
    write_local_version(tmp_path, dead.version_id)  # what the dead run left half written
    lease = acquire_run_lease(tmp_path, ttl_s=60, held_by_process=True)
    assert lease.run_id != dead.run_id and lease.base_version == base
    assert "its process" in caplog.text and dead.run_id in caplog.text
    # The holder (this process) is alive: nobody may break this lease.
    assert not versions.holder_is_dead(lease)
    with pytest.raises(RootBusy):
        acquire_run_lease(tmp_path, held_by_process=True)
    write_local_version(tmp_path, lease.version_id)
    finish_run(lease, keep=1)
    assert list_versions(tmp_path) == [latest_version_id(tmp_path)] == [lease.version_id]


def test_a_launched_or_foreign_lease_is_not_broken_before_it_expires(tmp_path):
    launched = _lease_taken_by_a_process_that_exits(tmp_path, held_by_process=False)
    assert not versions.holder_is_dead(launched)  # the launcher exits by design; the job holds the root
    with pytest.raises(RootBusy, match=launched.run_id):
        acquire_run_lease(tmp_path)
    (tmp_path / versions.RUN_LOCK).write_text(
        json.dumps({**json.loads(launched.to_json()), "holder": "another-host:1", "held_by_process": True})
    )
    with pytest.raises(RootBusy):
        acquire_run_lease(tmp_path)


def test_lease_keeper_renews_a_lease_beyond_its_ttl(tmp_path):
    lease = acquire_run_lease(tmp_path, ttl_s=0.6, held_by_process=True)
    write_local_version(tmp_path, lease.version_id)
    with versions.LeaseKeeper(lease, ttl_s=0.6) as keeper:
        time.sleep(1.5)  # 2.5 TTLs
    assert keeper.lost is None and keeper.renewals >= 3
    with pytest.raises(RootBusy):
        acquire_run_lease(tmp_path)
    finish_run(keeper.lease)
    assert latest_version_id(tmp_path) == lease.version_id and read_lease(tmp_path) is None
    # Without the keeper the same wait loses the lease.
    lapsed = acquire_run_lease(tmp_path, ttl_s=0.6)
    write_local_version(tmp_path, lapsed.version_id)
    time.sleep(1.0)
    with pytest.raises(LeaseLost):
        finish_run(lapsed)


def test_abandon_run_deletes_the_unpublished_version_and_releases(tmp_path):
    base = publish_new_version(tmp_path)
    lease = acquire_run_lease(tmp_path, ttl_s=60)
    write_local_version(tmp_path, lease.version_id)
    assert versions.abandon_run(lease) is True
    assert list_versions(tmp_path) == [base] and latest_version_id(tmp_path) == base
    assert read_lease(tmp_path) is None


def test_lease_round_trips_as_json(tmp_path):
    lease = acquire_run_lease(tmp_path, ttl_s=60)
    assert versions.RunLease.from_json(lease.to_json()) == lease


def test_finish_run_publishes_prunes_and_releases_even_on_failure(tmp_path):
    first = publish_new_version(tmp_path)
    lease = acquire_run_lease(tmp_path, ttl_s=60)
    write_local_version(tmp_path, lease.version_id)
    assert finish_run(lease.to_json(), keep=1) == [first]
    assert latest_version_id(tmp_path) == lease.version_id and read_lease(tmp_path) is None

    failing = acquire_run_lease(tmp_path, ttl_s=60)
    (write_local_version(tmp_path, failing.version_id) / "train/train-000000.tar").unlink()
    with pytest.raises(InvalidVersion):
        finish_run(failing)
    assert latest_version_id(tmp_path) == lease.version_id and read_lease(tmp_path) is None


# ---------------------------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------------------------


def test_prune_keeps_latest_recent_leased_and_referenced_versions(tmp_path):
    oldest = publish_new_version(tmp_path)
    old = publish_new_version(tmp_path)
    middle = publish_new_version(tmp_path, reuse_items_from=oldest)
    latest = publish_new_version(tmp_path)
    abandoned = new_version_id()  # a run that died after writing: newer than LATEST, no lease
    write_local_version(tmp_path, abandoned)

    # 'middle' reads item shards from 'oldest', so keeping 'middle' keeps 'oldest'.
    assert prune(tmp_path, keep=2) == [old, abandoned]
    assert list_versions(tmp_path) == [oldest, middle, latest]
    assert prune(tmp_path, keep=1) == [oldest, middle]
    assert list_versions(tmp_path) == [latest]


def test_prune_never_deletes_what_kept_versions_or_live_leases_use(tmp_path):
    oldest = publish_new_version(tmp_path)
    publish_new_version(tmp_path)
    reusing = publish_new_version(tmp_path, reuse_items_from=oldest)
    lease = acquire_run_lease(tmp_path, ttl_s=60)
    write_local_version(tmp_path, lease.version_id)  # in progress, newer than LATEST

    deleted = prune(tmp_path, keep=1)
    assert set(list_versions(tmp_path)) == {oldest, reusing, lease.version_id}
    assert len(deleted) == 1
    validate_manifest(version_url(tmp_path, reusing))
    with pytest.raises(ValueError):
        prune(tmp_path, keep=0)


# ---------------------------------------------------------------------------------------------
# Racing runs: real processes
# ---------------------------------------------------------------------------------------------


def _race_publish(root: str, base: str | None, start, results) -> None:
    version_id = new_version_id()
    write_local_version(Path(root), version_id)
    start.wait()
    try:
        publish(root, version_id, base)
        results.put(("published", version_id))
    except PublishConflict:
        results.put(("conflict", version_id))


def _race_lease(root: str, start, results) -> None:
    start.wait()
    try:
        lease = acquire_run_lease(root, ttl_s=60)
        results.put(("leased", lease.version_id))
    except RootBusy:
        results.put(("busy", None))


def _run_racers(target, args, count: int) -> list[tuple[str, str | None]]:
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return outcomes


def test_racing_publishers_from_the_same_base_publish_exactly_once(tmp_path):
    base = None
    for _ in range(3):  # several rounds: from an empty root, then from each winner
        outcomes = _run_racers(_race_publish, (str(tmp_path), base), count=4)
        winners = [v for status, v in outcomes if status == "published"]
        assert len(winners) == 1, outcomes
        assert latest_version_id(tmp_path) == winners[0]
        validate_manifest(resolve_latest(tmp_path))
        base = winners[0]
    assert not list(tmp_path.glob(".swap.lock*")), "swap lock left behind"


def test_racing_runs_get_one_lease(tmp_path):
    outcomes = _run_racers(_race_lease, (str(tmp_path),), count=4)
    assert sorted(status for status, _ in outcomes) == ["busy", "busy", "busy", "leased"]
    (winner,) = [v for status, v in outcomes if status == "leased"]
    assert read_lease(tmp_path).version_id == winner


def _count_under_the_swap_lock(root: str, dead_pid: int, start, results) -> None:
    """Increment a counter 150 times under the swap lock; every 10th time "die" holding it (the lock is
    left naming a dead process), so the others must break it while they race to create it."""
    lock, counter = Path(root) / folders.SWAP_LOCK, Path(root) / "counter"
    start.wait()
    for i in range(150):
        with folders._swap_lock(lock):
            counter.write_text(str(int(counter.read_text()) + 1))
            if i % 10 == 9:
                lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid, "token": f"{i}"}))
    results.put(("done", None))


def test_the_swap_lock_excludes_while_abandoned_locks_are_broken(tmp_path):
    dead = multiprocessing.get_context("fork").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    (tmp_path / "counter").write_text("0")
    _run_racers(_count_under_the_swap_lock, (str(tmp_path), dead.pid), count=4)
    assert int((tmp_path / "counter").read_text()) == 4 * 150, "an update was lost: two processes held it"


def _foreign_swap_lock(root: Path, age_s: float) -> Path:
    """A swap lock left by a process on another host (its pid cannot be checked), ``age_s`` old."""
    lock = root / folders.SWAP_LOCK
    lock.write_text(json.dumps({"host": "another-host", "pid": 1, "token": "abc"}))
    past = time.time() - age_s
    os.utime(lock, (past, past))
    return lock


def test_swap_lock_of_a_live_process_here_is_never_broken_by_age(tmp_path):
    lock = tmp_path / folders.SWAP_LOCK
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "abc"}))
    past = time.time() - 10 * folders.SWAP_LOCK_STALE_S  # as if the wall clock had jumped forward
    os.utime(lock, (past, past))
    folders._break_if_abandoned(lock)
    assert lock.exists(), "a live process on this host still holds it"


def test_swap_lock_of_another_host_is_broken_only_once_stale(tmp_path):
    base = publish_new_version(tmp_path)
    lock = _foreign_swap_lock(tmp_path, age_s=5)
    folders._break_if_abandoned(lock)
    assert lock.exists(), "a fresh lock of a live process elsewhere must be respected"

    _foreign_swap_lock(tmp_path, age_s=folders.SWAP_LOCK_STALE_S + 1)
    version_id = new_version_id()
    write_local_version(tmp_path, version_id)
    publish(tmp_path, version_id, base)
    assert latest_version_id(tmp_path) == version_id
    assert not lock.exists()


# ---------------------------------------------------------------------------------------------
# Runs killed with SIGKILL at every stage
# ---------------------------------------------------------------------------------------------

# A run as the ingest job does it, stopping (and announcing it) at the named stage so the test can kill it.
_CHILD = r"""
import sys, time
from pathlib import Path
sys.path[:0] = [sys.argv[4], sys.argv[5]]
from pipeline import versions
from pipeline.versions import folders
from test_versions import version_files, write_version

root, stop_at, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def stop(stage):
    if stage == stop_at:
        marker.write_text(stage)
        time.sleep(600)

lease = versions.acquire_run_lease(root, ttl_s=1.0)
stop("leased")
files = list(version_files(lease.version_id).items())
half = dict(files[: len(files) // 2])
write_version(root, lease.version_id, only=half)
stop("half_written")
write_version(root, lease.version_id)
stop("manifest_written")
if stop_at == "in_swap_lock":
    with folders._swap_lock(Path(root) / folders.SWAP_LOCK):
        (Path(root) / ".LATEST.partial.tmp").write_text(lease.version_id[:5])
        stop("in_swap_lock")
versions.publish(root, lease.version_id, lease.base_version, lease=lease)
stop("published")
versions.release_run_lease(lease)
"""


def kill_run_at(root: str, stage: str, tmp_path: Path) -> None:
    """Start a run in a child process, SIGKILL it when it reaches ``stage``, and reap it."""
    marker = tmp_path / f"reached-{stage}"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, root, stage, str(marker), str(REPO_ROOT), str(REPO_ROOT / "tests")]
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.poll() is None, "the child run exited before reaching its stage"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def assert_latest_valid_then_next_run_publishes(root: str, good: str, killed_after_publish: bool) -> None:
    validate_manifest(resolve_latest(root))
    assert (latest_version_id(root) != good) if killed_after_publish else (latest_version_id(root) == good)
    time.sleep(1.1)  # the killed run's lease (ttl 1 s) expires
    after = publish_new_version(root)
    assert latest_version_id(root) == after
    validate_manifest(resolve_latest(root))


@pytest.mark.parametrize("stage", ["leased", "half_written", "manifest_written", "in_swap_lock", "published"])
def test_run_killed_at_any_stage_leaves_latest_valid_and_the_root_usable(tmp_path, stage):
    root = tmp_path / "root"
    good = publish_new_version(root)
    kill_run_at(str(root), stage, tmp_path)
    assert_latest_valid_then_next_run_publishes(str(root), good, killed_after_publish=stage == "published")
    assert not (root / folders.SWAP_LOCK).exists()


@pytest.mark.gcs
@pytest.mark.parametrize("stage", ["half_written", "manifest_written", "published"])
def test_gcs_run_killed_midway_leaves_latest_valid(gcs_emulator, tmp_path, stage):
    gcs_emulator.make_bucket("kill-test")
    root = f"gs://kill-test/{stage}"
    good = publish_new_version(root)
    kill_run_at(root, stage, tmp_path)
    assert_latest_valid_then_next_run_publishes(root, good, killed_after_publish=stage == "published")


# ---------------------------------------------------------------------------------------------
# GCS (emulator): the same API over gs://
# ---------------------------------------------------------------------------------------------


@pytest.mark.gcs
def test_gcs_root_publish_lease_validate_and_prune(gcs_emulator):
    bucket = gcs_emulator.make_bucket("versions-test")
    root = "gs://versions-test/datasets/microlens"
    assert resolve_latest(root) is None

    published = []
    for i in range(3):
        lease = acquire_run_lease(root, ttl_s=60)
        with pytest.raises(RootBusy):
            acquire_run_lease(root)
        reuse = {"reuse_items_from": published[0]} if i == 2 else {}
        upload_version(root, lease.version_id, **reuse)
        publish(root, lease.version_id, lease.base_version, lease=lease)
        assert release_run_lease(lease)
        published.append(lease.version_id)
    assert resolve_latest(root) == f"{root}/versions/{published[-1]}"
    assert bucket.blob("datasets/microlens/LATEST").download_as_text() == f"{published[-1]}\n"
    assert list_versions(root) == published

    with pytest.raises(PublishConflict):
        stale = new_version_id()
        upload_version(root, stale)
        publish(root, stale, published[0])

    broken = new_version_id()
    upload_version(root, broken)
    bucket.blob(f"datasets/microlens/versions/{broken}/train/train-000000.tar").upload_from_string(b"short")
    with pytest.raises(InvalidVersion, match="train-000000.tar: 5 bytes"):
        validate_manifest(version_url(root, broken))

    deleted = prune(root, keep=1)
    assert set(deleted) == {published[1], stale, broken}
    assert list_versions(root) == [published[0], published[2]]  # [0]'s item shards are reused by [2]
    validate_manifest(resolve_latest(root))
