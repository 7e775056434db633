"""Bad input and faults (issue 12): a clear error up front, never a broken or empty dataset published,
nothing read from outside its folder.

One test per case. Each asserts the exit status, the message (one line, no traceback), and that
nothing was published, lost or left behind: the output or dataset root holds exactly what it held
before (or exactly the new dataset), with no staging folder, ``_work`` folder, ``.tmp`` file or lease
left over. Runs are real ``videorec`` commands on tiny synth data (in-process where only the exit
status and message matter, as child processes where signals, stderr or timing are the point).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline import versions
from pipeline.cli import main as videorec
from pipeline.inspect import verify_dataset
from pipeline.staged_output import remove_unlisted_files
from tests.dataset_files import dataset_failures, dataset_table

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]
FRAMES = ["--frame-size", "32"]


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def id_only_dataset(synth, tmp_path_factory) -> Path:
    """A good ID-only dataset written by ingest (copied by the tests that need an old dataset)."""
    out = tmp_path_factory.mktemp("good") / "dataset"
    assert videorec(["ingest", "--interactions", str(synth / "pairs.csv"), "--output", str(out), *LOCAL]) == 0
    return out


@pytest.fixture(scope="module")
def published_root(synth, tmp_path_factory) -> Path:
    """A dataset root with one published ID-only version (copied by the tests that need one)."""
    root = tmp_path_factory.mktemp("published") / "root"
    argv = ["ingest", "--interactions", str(synth / "pairs.csv"), "--dataset-root", str(root), *LOCAL]
    assert videorec(argv) == 0
    return root


def ingest(capsys, *argv: str) -> tuple[int, str]:
    """``videorec ingest ARGV`` in this process: (exit status, stderr)."""
    try:
        status = videorec(["ingest", *argv])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def child(*argv: str, env: dict | None = None) -> subprocess.Popen:
    """``videorec ARGV`` as a child process in its own session (so signals reach its workers too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (relative path -> sha256, or ``dir``)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def leftovers(folder: Path) -> list[str]:
    """Anything a run must not leave behind: staging folders, ``_work``, ``.tmp`` files, probes, locks."""
    if not folder.exists():
        return []
    bad = (".staging-", "_work", ".tmp", ".videorec-probe", "RUN.lock", ".swap.lock")
    return sorted(str(p) for p in folder.rglob("*") if any(mark in p.name for mark in bad))


def one_error_line(err: str, command: str = "ingest") -> str:
    """The single ``videorec COMMAND: error: ...`` line of ``err``; fails on a traceback or more lines."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"videorec {command}: error: "), lines
    return lines[0]


def write_csv(path: Path, rows: list[tuple], header: str = "user,item,timestamp") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def good_rows(users: int = 6, per_user: int = 6, items: int = 6) -> list[tuple]:
    return [(f"u{u}", 1 + (u + k) % items, 1000 * u + k) for u in range(users) for k in range(per_user)]


def assert_root_unchanged(root: Path, before: dict[str, str]) -> None:
    assert snapshot(root) == before
    assert versions.read_lease(root) is None


# ---------------------------------------------------------------------------------------------- 1. before the job


def test_a_misspelled_flag_is_refused_before_anything_runs(synth, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--interactions", str(synth / "pairs.csv"), "--output", str(out), "--frame-szie", "32"]
    status, err = ingest(capsys, *argv, "--min-user-interaction", "10", *LOCAL)
    assert status == 2
    assert one_error_line(err).endswith(
        "unknown flag --frame-szie; did you mean --frame-size? (see videorec ingest --help)"
    )
    assert not out.exists()


def test_a_videos_folder_that_does_not_exist_is_refused_not_ingested_as_id_only(synth, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "--interactions",
        str(synth / "pairs.csv"),
        "--videos",
        str(tmp_path / "vids"),
        "--output",
        str(out),
    ]
    status, err = ingest(capsys, *argv, *LOCAL)
    assert status == 2
    assert "--videos" in one_error_line(err) and "does not exist" in err
    assert snapshot(tmp_path) == {}


def test_a_pattern_that_finds_no_video_is_refused(synth, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--interactions", str(synth / "pairs.csv"), "--videos", str(synth / "videos")]
    status, err = ingest(capsys, *argv, "--video-pattern", "{item}.mkv", "--output", str(out), *LOCAL)
    assert status == 2
    assert "check --videos and --video-pattern" in one_error_line(err) and ".mkv does not exist" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "stamp,expected,fmt,seconds",
    [
        (lambda k: f"2024-03-0{1 + k % 9}T10:00:0{k % 10}", "timestamps are dates", "iso8601", 1709287200),
        (lambda k: f"1700000000.{k + 1}5", "timestamps have fractions of a second", "float", 1700000000),
    ],
    ids=["iso-dates", "float-seconds"],
)
def test_timestamps_that_are_not_integers_are_refused_with_the_flag_to_pass(
    tmp_path, capsys, stamp, expected, fmt, seconds
):
    rows = [(u, i, stamp(k)) for k, (u, i, _) in enumerate(good_rows())]
    pairs = write_csv(tmp_path / "pairs.csv", rows)
    out = tmp_path / "out"
    status, err = ingest(capsys, "--interactions", str(pairs), "--output", str(out), *LOCAL)
    assert status == 2
    line = one_error_line(err)
    assert expected in line and "not --timestamp-format unix" in line
    assert f"pass --timestamp-format {fmt}" in line
    assert sorted(snapshot(tmp_path)) == ["pairs.csv"]
    # the flag the message names ingests every row, as integer seconds
    status, err = ingest(
        capsys, "--interactions", str(pairs), "--output", str(out), "--timestamp-format", fmt, *LOCAL
    )
    assert status == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows_dropped"] == {} and manifest["counts"]["rows_used"] == len(rows)
    assert manifest["config"]["timestamp_format"] == fmt
    first = dataset_table(out, "sequences").to_pylist()[0]["timestamps"][0]
    assert first == seconds and leftovers(tmp_path) == []


def test_integer_timestamps_under_another_timestamp_format_are_refused(tmp_path, capsys):
    pairs = write_csv(tmp_path / "pairs.csv", good_rows())
    argv = ["--interactions", str(pairs), "--output", str(tmp_path / "out"), "--timestamp-format", "iso8601"]
    status, err = ingest(capsys, *argv, *LOCAL)
    assert status == 2
    line = one_error_line(err)
    assert "timestamps are integers" in line and "pass --timestamp-format unix" in line
    assert sorted(snapshot(tmp_path)) == ["pairs.csv"]


def test_format_movielens_on_a_csv_is_refused(synth, tmp_path, capsys):
    argv = [
        "--interactions",
        str(synth / "pairs.csv"),
        "--format",
        "movielens",
        "--output",
        str(tmp_path / "o"),
    ]
    status, err = ingest(capsys, *argv, *LOCAL)
    assert status == 2
    line = one_error_line(err)
    assert "are not valid movielens rows" in line and "missing_field" in line and "check --format" in line
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize(
    "content", ["", "user,item,timestamp\n", "\n\n"], ids=["empty", "header-only", "blank"]
)
def test_an_empty_or_header_only_csv_is_refused(tmp_path, capsys, content):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(content)
    status, err = ingest(capsys, "--interactions", str(pairs), "--output", str(tmp_path / "out"), *LOCAL)
    assert status == 2
    assert "has no data rows" in one_error_line(err)
    assert sorted(snapshot(tmp_path)) == ["pairs.csv"]


def test_csv_columns_that_name_no_user_item_or_timestamp_are_refused(tmp_path, capsys):
    pairs = write_csv(tmp_path / "pairs.csv", good_rows(), header="customer,product,when")
    status, err = ingest(capsys, "--interactions", str(pairs), "--output", str(tmp_path / "out"), *LOCAL)
    assert status == 2
    line = one_error_line(err)
    assert "has no user column" in line and "name the columns user, item and timestamp" in line
    assert sorted(snapshot(tmp_path)) == ["pairs.csv"]


def test_the_wrong_file_as_titles_is_refused(synth, tmp_path, capsys):
    argv = ["--interactions", str(synth / "pairs.csv"), "--titles", str(synth / "pairs.csv")]
    status, err = ingest(capsys, *argv, "--output", str(tmp_path / "out"), *LOCAL)
    assert status == 2
    assert "--titles" in one_error_line(err) and "is this the titles file?" in err
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_output_is_refused_before_the_job(synth, tmp_path, capsys, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "dataset" if where == "under-a-file" else Path("/proc/videorec-test/dataset")
    status, err = ingest(capsys, "--interactions", str(synth / "pairs.csv"), "--output", str(out), *LOCAL)
    assert status == 2
    assert "cannot write to the folder of --output" in one_error_line(err) and "choose a writable" in err
    assert sorted(snapshot(tmp_path)) == ["a-file"]


def test_an_existing_output_is_not_overwritten_without_overwrite(synth, id_only_dataset, tmp_path, capsys):
    out = tmp_path / "dataset"
    shutil.copytree(id_only_dataset, out)
    before = snapshot(out)
    status, err = ingest(capsys, "--interactions", str(synth / "pairs.csv"), "--output", str(out), *LOCAL)
    assert status == 2
    assert "already exists and is not empty; pass --overwrite" in one_error_line(err)
    assert snapshot(out) == before


@pytest.mark.gcs
def test_an_unreachable_gcs_is_refused_quickly_naming_the_network(synth, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "NO_GCE_CHECK": "True"}
    started = time.monotonic()
    run = child(
        "ingest",
        "--interactions",
        str(synth / "pairs.csv"),
        "--output",
        "gs://bucket/out",
        "--quiet",
        env=env,
    )
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2
    assert time.monotonic() - started < 60
    line = one_error_line(err)
    assert "gs://bucket" in line and "check the network connection to Google Cloud Storage" in line


def test_a_run_in_which_every_video_is_missing_is_refused_and_latest_stays(
    synth, published_root, tmp_path, capsys
):
    root = tmp_path / "root"
    shutil.copytree(published_root, root)
    before = snapshot(root)
    empty = tmp_path / "videos"
    empty.mkdir()
    argv = ["--interactions", str(synth / "pairs.csv"), "--videos", str(empty), "--dataset-root", str(root)]
    status, err = ingest(capsys, *argv, "--keep", "1", *LOCAL)
    assert status == 2
    assert "none of the first" in one_error_line(err) and "has a video" in err
    assert_root_unchanged(root, before)


# ---------------------------------------------------------------------------------------------- 2. gates


def test_gate_videos_a_run_where_most_videos_fail_publishes_nothing_and_prunes_nothing(
    synth, published_root, tmp_path, capsys
):
    root = tmp_path / "root"
    shutil.copytree(published_root, root)
    before = snapshot(root)
    videos = tmp_path / "videos"
    shutil.copytree(synth / "videos", videos)
    for video in sorted(videos.glob("*.mp4"))[2:]:
        video.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(4000))  # damaged beyond repair
    argv = ["--interactions", str(synth / "pairs.csv"), "--videos", str(videos), "--dataset-root", str(root)]
    status, err = ingest(capsys, *argv, "--keep", "1", *FRAMES, *LOCAL)
    assert status == 4
    line = one_error_line(err)
    assert line.startswith("videorec ingest: error: not published: gate no_users: ")
    assert "gate videos: 6 of 8 items failed (75% > --max-dropped-fraction 0.5; corrupt 6)" in line
    assert_root_unchanged(root, before)


def test_gate_no_users_an_empty_dataset_is_never_written(synth, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "--interactions",
        str(synth / "pairs.csv"),
        "--min-user-interactions",
        "1000",
        "--output",
        str(out),
    ]
    status, err = ingest(capsys, *argv, *LOCAL)
    assert status == 4
    assert (
        "gate no_users: the dataset has no users (12 seen; dropped: too_few_interactions 12)"
        in one_error_line(err)
    )
    assert snapshot(tmp_path) == {}


def test_gate_rows_a_log_that_turns_bad_after_the_sampled_rows_keeps_the_old_dataset(
    id_only_dataset, tmp_path, capsys
):
    rows = good_rows(users=40, per_user=5, items=8)  # 200 good rows: the up-front sample passes
    rows += [(f"v{k}", 1, f"{k}.5") for k in range(400)]  # then 400 with fractional timestamps
    pairs = write_csv(tmp_path / "pairs.csv", rows)
    out = tmp_path / "dataset"
    shutil.copytree(id_only_dataset, out)
    before = snapshot(out)
    status, err = ingest(capsys, "--interactions", str(pairs), "--output", str(out), "--overwrite", *LOCAL)
    assert status == 4
    line = one_error_line(err)
    assert (
        "gate rows: 400 of 600 rows were invalid (67% > --max-dropped-fraction 0.5; bad_timestamp 400)"
        in line
    )
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []
    # A looser gate lets the same input through, and the summary says the gates passed.
    looser = [
        "--interactions",
        str(pairs),
        "--output",
        str(out),
        "--overwrite",
        "--max-dropped-fraction",
        "0.7",
    ]
    status = videorec(["ingest", *looser, "--direct_running_mode=in_memory", "--direct_num_workers=1"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "  gates       passed" in captured.out
    assert verify_dataset(str(out)) == [] and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- 3. atomic, clean outputs


def test_overwrite_replaces_the_whole_dataset_and_leaves_nothing_stale(
    synth, id_only_dataset, tmp_path, capsys
):
    out = tmp_path / "dataset"
    shutil.copytree(id_only_dataset, out)
    (out / "train" / "train-999999.tar").write_bytes(b"an old run's extra shard")
    (out / "_work").mkdir()
    (out / "manifest.json.tmp-1-2").write_text("{}")
    argv = [
        "--interactions",
        str(synth / "pairs.csv"),
        "--videos",
        str(synth / "videos"),
        "--output",
        str(out),
    ]
    status, err = ingest(capsys, *argv, "--overwrite", *FRAMES, *LOCAL)
    assert status == 0, err
    assert verify_dataset(str(out)) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["has_frames"]
    listed = {s["path"] for kind in ("items", "train") for s in manifest["shards"][kind]}
    on_disk = {str(p.relative_to(out)) for pattern in ("*.tar", "*.tar.gz") for p in out.rglob(pattern)}
    assert on_disk == listed
    assert leftovers(tmp_path) == []
    # What a killed worker could leave in a finished job's folder is removed before the swap.
    (out / "items" / "items-000000.tar.tmp-7-8").write_bytes(b"half a shard")
    (out / "_work" / "fragments").mkdir(parents=True)
    assert remove_unlisted_files(str(out), manifest, quiet=True) == 1
    assert leftovers(tmp_path) == [] and verify_dataset(str(out)) == []


def _wait_for(predicate, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigterm_during_a_run_keeps_the_old_output_and_cleans_up(synth, id_only_dataset, tmp_path):
    out = tmp_path / "dataset"
    shutil.copytree(id_only_dataset, out)
    before = snapshot(out)
    run = child(
        "ingest",
        "--interactions",
        str(synth / "pairs.csv"),
        "--videos",
        str(synth / "videos"),
        "--output",
        str(out),
        "--overwrite",
        *FRAMES,
        "--direct_num_workers=2",
    )
    _wait_for(lambda: any(p.is_file() for p in tmp_path.glob(".dataset.staging-*/**/*")), run)
    os.kill(run.pid, signal.SIGTERM)  # what a scheduler sends: to the driver only
    _, err = run.communicate(timeout=120)
    assert run.returncode == 143
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("videorec ingest: interrupted by SIGTERM; removed the unfinished output")
    )
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_ctrl_c_during_a_root_run_removes_its_version_and_releases_the_lease(synth, published_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(published_root, root)
    before = snapshot(root)
    run = child(
        "ingest",
        "--interactions",
        str(synth / "pairs.csv"),
        "--videos",
        str(synth / "videos"),
        "--dataset-root",
        str(root),
        *FRAMES,
        *LOCAL,
    )
    _wait_for(lambda: any(p.is_file() for p in (root / "versions").glob("*/_work/**/*")), run)
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130
    assert "Traceback" not in err
    assert "interrupted by SIGINT; removed unpublished version" in err.strip().splitlines()[-1]
    assert_root_unchanged(root, before)


def test_a_lease_left_by_a_dead_run_on_this_host_is_broken_and_the_run_publishes(
    synth, published_root, tmp_path
):
    root = tmp_path / "root"
    shutil.copytree(published_root, root)
    code = "import sys; from pipeline.versions import acquire_run_lease as a; a(sys.argv[1], held_by_process=True)"
    subprocess.run([sys.executable, "-c", code, str(root)], cwd=REPO_ROOT, check=True)
    dead = versions.read_lease(root)
    assert dead is not None and dead.expires_at > time.time() + 3600  # 12 h left: nobody would wait that
    run = child(
        "ingest",
        "--interactions",
        str(synth / "pairs.csv"),
        "--dataset-root",
        str(root),
        "--keep",
        "1",
        *LOCAL,
    )
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert f"breaking the lease of run {dead.run_id}" in err and "Traceback" not in err
    (version,) = versions.list_versions(root)
    assert versions.latest_version_id(root) == version != dead.version_id
    assert leftovers(root) == []


def test_a_run_longer_than_its_lease_renews_it_and_publishes(synth, published_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(published_root, root)
    started = time.monotonic()
    argv = ["--interactions", str(synth / "pairs.csv"), "--videos", str(synth / "videos")]
    status, err = ingest(capsys, *argv, "--dataset-root", str(root), "--lease-ttl", "1", *FRAMES, *LOCAL)
    assert status == 0, err
    assert time.monotonic() - started > 2 * 1  # decoding 8 videos outlives the 1 s lease twice over
    assert len(versions.list_versions(root)) == 2 and versions.read_lease(root) is None
    assert leftovers(root) == []


# ---------------------------------------------------------------------------------------------- 7. paths stay inside


def test_item_ids_that_lead_outside_the_video_folder_fail_as_bad_item_id(synth, tmp_path, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(synth / "videos", videos)
    secret = tmp_path / "secret.mp4"  # a real video, outside --videos
    shutil.copyfile(videos / "1.mp4", secret)
    outside = str(tmp_path / "elsewhere")
    shutil.copyfile(videos / "2.mp4", outside + ".mp4")
    rows = good_rows(users=6, per_user=6, items=6) + [
        (f"u{u}", bad, 9000 + u) for u in range(6) for bad in ("../secret", outside)
    ]
    pairs = write_csv(tmp_path / "pairs.csv", rows)
    out = tmp_path / "out"
    argv = ["--interactions", str(pairs), "--videos", str(videos), "--output", str(out)]
    status, err = ingest(capsys, *argv, *FRAMES, *LOCAL)
    assert status == 0, err
    failures = {f["item_id"]: f for f in dataset_failures(out) if f["kind"] == "item"}
    assert failures["../secret"]["reason"] == failures[outside]["reason"] == "bad_item_id"
    assert "outside the video folder" in failures["../secret"]["message"]
    items = dataset_table(out, "items").column("item_id").to_pylist()
    assert sorted(items) == [str(i) for i in range(1, 7)]
    dropped = [f for f in dataset_failures(out) if f["kind"] == "row" and f["reason"] == "item_bad_item_id"]
    assert len(dropped) == 12
    assert leftovers(tmp_path) == []


def test_video_map_uris_outside_its_folder_need_allow_any_uri(synth, tmp_path, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    inside = maps / "videos"
    shutil.copytree(synth / "videos", inside)
    rows = ["item,uri"] + [f"{i},videos/{i}.mp4" for i in range(1, 8)] + [f"8,{synth / 'videos' / '8.mp4'}"]
    (maps / "videos.csv").write_text("\n".join(rows) + "\n")
    argv = [
        "--interactions",
        str(synth / "pairs.csv"),
        "--video-map",
        str(maps / "videos.csv"),
        *FRAMES,
        *LOCAL,
    ]
    status, err = ingest(capsys, *argv, "--output", str(tmp_path / "strict"))
    assert status == 0, err
    reasons = {
        f["item_id"]: f["reason"] for f in dataset_failures(tmp_path / "strict") if f["kind"] == "item"
    }
    assert reasons.get("8") == "bad_uri"
    status, err = ingest(capsys, *argv, "--output", str(tmp_path / "open"), "--allow-any-uri")
    assert status == 0, err
    assert "8" in dataset_table(tmp_path / "open", "items").column("item_id").to_pylist()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- frames


def _jpeg(path: Path) -> Path:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(out, format="JPEG")
    path.write_bytes(out.getvalue())
    return path


def frames_cmd(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        status = videorec(["frames", *argv])
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_frames_of_a_still_image_fail_as_no_video_stream(tmp_path, capsys):
    image = _jpeg(tmp_path / "photo.jpg")
    out = tmp_path / "frames"
    status, stdout, _ = frames_cmd(capsys, str(image), "--output", str(out), "--in-process")
    assert status == 1
    assert stdout.splitlines()[0].startswith("FAIL  photo: no_video_stream: ") and "still image" in stdout
    assert list(out.iterdir()) == []


def test_frames_output_pointing_at_a_file_is_refused(synth, tmp_path, capsys):
    target = tmp_path / "frames.txt"
    target.write_text("keep me")
    status, _, err = frames_cmd(capsys, str(synth / "videos" / "1.mp4"), "--out", str(target))
    assert status == 2
    assert one_error_line(err, "frames").endswith(
        f"--output {target} is a file; give a folder (see videorec frames --help)"
    )
    assert target.read_text() == "keep me"


def test_inspect_reports_a_corrupt_items_part_as_a_problem_not_a_traceback(id_only_dataset, tmp_path, capsys):
    dataset = tmp_path / "dataset"
    shutil.copytree(id_only_dataset, dataset)
    (part,) = (dataset / "tables/items").glob("part-*.parquet")
    part.write_bytes(part.read_bytes()[:100])  # cut short
    before = snapshot(dataset)
    capsys.readouterr()
    assert videorec(["inspect", str(dataset)]) == 1  # 1: the dataset has problems (2: no manifest)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM: ")]
    relative = f"tables/items/{part.name}"
    assert problems[-1].startswith(f"PROBLEM: {relative}: not a readable Parquet file (")
    assert f"PROBLEM: {relative}: sha256 differs from the manifest" in problems
    assert out.splitlines()[-1] == f"dataset has {len(problems)} problem(s)"
    assert snapshot(dataset) == before


def test_frames_replaces_a_videos_old_outputs_and_reads_sizes_like_ingest(synth, tmp_path, capsys):
    video, out = str(synth / "videos" / "1.mp4"), tmp_path / "frames"
    assert frames_cmd(capsys, video, "--out", str(out), "--num-frames", "5", "--in-process")[0] == 0
    status, _, _ = frames_cmd(
        capsys, video, "--output", str(out), "--num-frames", "3", "--frame-size", "24x16", "--in-process"
    )
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == ["1.0.jpg", "1.1.jpg", "1.2.jpg", "1.json"]
    assert json.loads((out / "1.json").read_text())["frames"] == ["1.0.jpg", "1.1.jpg", "1.2.jpg"]
    with Image.open(out / "1.0.jpg") as frame:
        assert frame.size == (16, 24)  # width x height of a 24x16 (height x width) frame
    # A video that now fails leaves no old frames beside nothing.
    broken = tmp_path / "1.mp4"
    broken.write_bytes(b"not a video")
    assert frames_cmd(capsys, str(broken), "--output", str(out), "--in-process")[0] == 1
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------- 4. nightly accounting


def test_nightly_runs_count_decoded_reused_retried_and_give_up_after_max_attempts(synth, tmp_path, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(synth / "videos", videos)
    (videos / "3.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(3000))  # permanently broken
    root = tmp_path / "root"
    argv = ["--interactions", str(synth / "pairs.csv"), "--videos", str(videos), "--dataset-root", str(root)]
    argv += ["--max-attempts", "2", *FRAMES, "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    stats = []
    for _ in range(3):
        status, err = ingest(capsys, *argv)
        assert status == 0, err
        version = versions.resolve_latest(root)
        stats.append(json.loads((Path(version) / "run_stats.json").read_text()))
    first, second, third = stats
    assert (first["videos_decoded"], first["videos_reused"], first["videos_retried"]) == (8, 0, 0)
    assert (second["videos_decoded"], second["videos_reused"], second["videos_retried"]) == (1, 7, 1)
    assert (third["videos_decoded"], third["videos_reused"], third["videos_given_up"]) == (0, 7, 1)
    assert third["videos_per_s"] == 0.0  # nothing decoded: no rate made up from reused videos
    (carried,) = [f for f in dataset_failures(version) if f["kind"] == "item"]
    assert (carried["item_id"], carried["reason"], carried["attempts"]) == ("3", "corrupt", 2)
    assert "--max-attempts 2" in carried["message"]
    assert leftovers(root) == []


# ---------------------------------------------------------------------------------------------- 8. one command line


def test_every_flag_has_help_and_no_rest_backticks():
    from pipeline.frames import build_parser
    from pipeline.options import parser

    for command in (parser(), build_parser()):
        text = command.format_help()
        assert "``" not in text and "`" not in text
        for action in command._actions:
            assert action.help and action.help.strip(), action.option_strings


def test_a_local_run_shows_progress_at_once_and_no_repeated_worker_lines(synth, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    run = child(
        "ingest", "--interactions", str(synth / "pairs.csv"), "--output", str(out), "--direct_num_workers=2"
    )
    first = run.stderr.readline()
    first_after = time.monotonic() - started
    rest = run.stderr.read()
    assert run.wait(timeout=300) == 0, rest
    assert first.startswith("ingest: runner FnApiRunner (local, 2 worker process(es)") and first_after < 5
    assert rest.startswith("ingest: checking inputs")
    for noise in ("apitools", "Logging handler created", "Traceback"):
        assert noise not in first + rest
    assert leftovers(tmp_path) == []


def test_info_lines_of_the_project_show_and_library_info_does_not():
    code = (
        "import logging; from logsetup import configure_logging; configure_logging(); "
        "logging.getLogger('trainer.train').info('resumed from step 7'); "
        "logging.getLogger('apache_beam.x').info('library chatter')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stderr.splitlines() == ["INFO trainer.train: resumed from step 7"]
