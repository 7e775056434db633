"""One run per ``gs://`` ``--output``, and ``--overwrite`` on ``gs://`` replaces only a dataset (issue 23).

Against the GCS emulator: a live lease beside the output makes the next ingest exit 3 naming its
holder before anything is written; a run releases its lease; a dead holder's lease is taken over;
``--overwrite`` refuses a prefix with objects ingest did not write and replaces a dataset it wrote.

gcp-storage-emulator ignores ``ifGenerationMatch`` (checked by the first test: a second "must not
exist" upload is accepted), so it cannot show two runs racing for the lease. The race is shown
with real processes on a local folder, whose compare-and-swap (``pipeline.versions.folders``)
stands in for the GCS precondition behind the same :func:`~pipeline.output_lease.take_lease`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time

import pytest

from pipeline.output_lease import OutputBusy, lease_location, take_lease
from pipeline.ownership import owned_paths
from tests.test_bad_input import LOCAL, good_rows, ingest, one_error_line, write_csv

pytestmark = pytest.mark.gcs

BUCKET = "videorec-lease"


@pytest.fixture(scope="module")
def bucket(gcs_emulator):
    return gcs_emulator.make_bucket(BUCKET)


def _objects(gcs_emulator, prefix: str) -> list[str]:
    return sorted(b.name for b in gcs_emulator.client().list_blobs(BUCKET, prefix=prefix))


def _ingest_id_only(capsys, tmp_path, output: str, *extra: str, users: int = 6) -> tuple[int, str]:
    pairs = write_csv(tmp_path / f"pairs-{users}.csv", good_rows(users=users))
    return ingest(capsys, "--interactions", str(pairs), "--output", output, *extra, *LOCAL)


def test_the_emulator_ignores_generation_preconditions(bucket):
    bucket.blob("precondition/probe").upload_from_string(b"one", if_generation_match=0)
    bucket.blob("precondition/probe").upload_from_string(b"two", if_generation_match=0)  # GCS: 412
    assert bucket.blob("precondition/probe").download_as_bytes() == b"two"


def test_a_second_run_to_a_held_gs_output_exits_3_naming_the_holder(gcs_emulator, bucket, tmp_path, capsys):
    output = f"gs://{BUCKET}/held/ds"
    lease = take_lease(output)  # a live run: this process
    status, err = _ingest_id_only(capsys, tmp_path, output)

    assert status == 3
    line = one_error_line(err)
    assert f"--output {output} is being written by run {lease['holder']} (started {lease['started']})" in line
    assert lease["holder"] == f"{socket.gethostname()}:{os.getpid()}"
    assert _objects(gcs_emulator, "held/") == ["held/.ds.ingest.lock"]  # nothing written


def test_a_run_releases_its_gs_lease_and_takes_over_a_dead_holders(gcs_emulator, bucket, tmp_path, capsys):
    output = f"gs://{BUCKET}/dead/ds"
    dead = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    stale = {"run": "x", "holder": f"{socket.gethostname()}:{dead.pid}", "started": "then"}
    bucket.blob("dead/.ds.ingest.lock").upload_from_string(
        json.dumps(dict(stale, expires_at=time.time() + 600))
    )

    status, err = _ingest_id_only(capsys, tmp_path, output)

    assert status == 0, err
    names = _objects(gcs_emulator, "dead/")
    assert "dead/ds/manifest.json" in names and "dead/.ds.ingest.lock" not in names


def _race(output: str, start, done, results) -> None:
    start.wait()
    try:
        take_lease(output)
        results.put("held")
    except OutputBusy as busy:
        results.put(str(busy))
    done.wait()  # a holder that exits is dead, and its lease is taken over: all stay until the end


@pytest.mark.parametrize("attempt", range(3))
def test_of_racing_runs_exactly_one_takes_the_lease(tmp_path, attempt):
    output = str(tmp_path / "out")
    context = multiprocessing.get_context("fork")
    start, done, results = context.Event(), context.Event(), context.Queue()
    racers = [context.Process(target=_race, args=(output, start, done, results)) for _ in range(4)]
    for racer in racers:
        racer.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in racers]
    done.set()
    for racer in racers:
        racer.join()

    assert outcomes.count("held") == 1, outcomes
    assert all("is being written by run" in o for o in outcomes if o != "held")
    parent, name = lease_location(output)
    assert json.loads((tmp_path / name).read_text())["holder"].startswith(socket.gethostname())


def test_overwrite_refuses_a_gs_prefix_with_foreign_objects(gcs_emulator, bucket, tmp_path, capsys):
    bucket.blob("foreign/ds/notes.txt").upload_from_string(b"mine")
    status, err = _ingest_id_only(capsys, tmp_path, f"gs://{BUCKET}/foreign/ds", "--overwrite")

    assert status == 2
    assert "holds no manifest.json written by videorec ingest" in one_error_line(err)
    assert _objects(gcs_emulator, "foreign/") == ["foreign/ds/notes.txt"]
    assert bucket.blob("foreign/ds/notes.txt").download_as_bytes() == b"mine"


def test_overwrite_replaces_a_gs_dataset_ingest_wrote_but_not_one_with_an_added_object(
    gcs_emulator, bucket, tmp_path, capsys
):
    output = f"gs://{BUCKET}/ours/ds"
    assert _ingest_id_only(capsys, tmp_path, output, users=6)[0] == 0
    assert _ingest_id_only(capsys, tmp_path, output)[0] == 2  # exists: --overwrite needed

    status, err = _ingest_id_only(capsys, tmp_path, output, "--overwrite", users=8)
    assert status == 0, err
    manifest = json.loads(bucket.blob("ours/ds/manifest.json").download_as_bytes())
    assert manifest["num_users"] == 8
    names = {n.removeprefix("ours/ds/") for n in _objects(gcs_emulator, "ours/ds/")}
    shards = {s["path"] for kind in manifest["shards"].values() for s in kind}
    assert shards <= names <= owned_paths(manifest)  # nothing of the first run is left

    bucket.blob("ours/ds/notes.txt").upload_from_string(b"mine")
    status, err = _ingest_id_only(capsys, tmp_path, output, "--overwrite", users=6)
    assert status == 2
    assert "holds files that videorec ingest did not write (e.g. notes.txt)" in one_error_line(err)
    assert json.loads(bucket.blob("ours/ds/manifest.json").download_as_bytes())["num_users"] == 8
