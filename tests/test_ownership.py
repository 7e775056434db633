"""Never delete what is not ours (issue 23, items 1-5): ``ingest``, ``experiment`` and ``synth`` write
over or delete only what the project wrote.

Every case points a flag (``--work-dir``, ``--output``, ``--overwrite``, ``--dataset-root``) at the
inputs, their parent, or an unrelated folder holding a sentinel file, and checks every file there
afterwards (sha256 of each). Runs are real ``videorec`` commands on tiny synth data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.cli import main as videorec
from pipeline.ownership import lock_path
from pipeline.synth import SynthConfig, generate
from tests.test_bad_input import FRAMES, LOCAL, child, leftovers, one_error_line, snapshot
from trainer.experiment_folder import EXPERIMENT_FILE, claim_folder

# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """10 users, 6 one-second videos (copied by each test, which may try to delete them)."""
    out = tmp_path_factory.mktemp("raw")
    generate(
        out,
        SynthConfig(
            users=10, items=6, categories=3, seed=5, max_interactions=7, min_seconds=1, max_seconds=1
        ),
        workers=2,
    )
    return out


@pytest.fixture(scope="module")
def dataset(raw, tmp_path_factory) -> Path:
    """An ID-only dataset written by ingest (copied by the tests that need an old one)."""
    out = tmp_path_factory.mktemp("dataset") / "dataset"
    assert videorec(["ingest", "--interactions", str(raw / "pairs.csv"), "--output", str(out), *LOCAL]) == 0
    return out


@pytest.fixture
def inputs(raw, tmp_path) -> Path:
    """A fresh copy of the inputs in ``tmp_path/parent/inputs``, with a sentinel beside them."""
    folder = tmp_path / "parent" / "inputs"
    shutil.copytree(raw, folder)
    (tmp_path / "parent" / "sentinel.txt").write_text("the parent's own file")
    return folder


@pytest.fixture
def unrelated(tmp_path) -> Path:
    folder = tmp_path / "unrelated"
    folder.mkdir()
    (folder / "sentinel.txt").write_text("someone else's file")
    (folder / "results.csv").write_text("someone else's results\n")
    return folder


def ingest(capsys, *argv: str) -> tuple[int, str]:
    try:
        status = videorec(["ingest", *argv])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def with_videos(inputs: Path) -> list[str]:
    return ["--interactions", str(inputs / "pairs.csv"), "--videos", str(inputs / "videos"), *FRAMES]


def target(name: str, inputs: Path, unrelated: Path) -> Path:
    return {"videos": inputs / "videos", "inputs": inputs, "parent": inputs.parent, "unrelated": unrelated}[
        name
    ]


# ---------------------------------------------------------------------------------------------- 1. --work-dir


@pytest.mark.parametrize("where", ["videos", "parent", "unrelated"])
def test_a_work_dir_that_holds_files_is_refused_and_left_as_it_was(
    inputs, unrelated, tmp_path, capsys, where
):
    work = target(where, inputs, unrelated)
    before = snapshot(tmp_path)
    argv = [*with_videos(inputs), "--output", str(tmp_path / "out"), "--work-dir", str(work), *LOCAL]
    status, err = ingest(capsys, *argv)
    assert status == 2
    assert f"--work-dir {work} is not empty; give a new or empty folder" in one_error_line(err)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("exists", [True, False], ids=["empty", "new"])
def test_a_new_or_empty_work_dir_is_used_and_only_what_the_run_made_is_removed(
    inputs, tmp_path, capsys, exists
):
    work = tmp_path / "scratch" / "work"
    work.mkdir(parents=True) if exists else None
    out = tmp_path / "out"
    status, err = ingest(capsys, *with_videos(inputs), "--output", str(out), "--work-dir", str(work), *LOCAL)
    assert status == 0, err
    assert json.loads((out / "manifest.json").read_text())["has_frames"]
    assert snapshot(tmp_path / "scratch") == ({"work": "dir"} if exists else {})
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- 2. --overwrite


@pytest.mark.parametrize("where", ["inputs", "videos", "parent"])
def test_an_output_that_holds_the_inputs_is_refused_even_with_overwrite(
    inputs, unrelated, tmp_path, capsys, where
):
    out = target(where, inputs, unrelated)
    before = snapshot(tmp_path)
    status, err = ingest(capsys, *with_videos(inputs), "--output", str(out), "--overwrite", *LOCAL)
    assert status == 2
    assert f"--output {out} holds the input" in one_error_line(err)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_an_output_that_is_no_dataset_is_never_replaced(raw, unrelated, tmp_path, capsys, overwrite):
    before = snapshot(tmp_path)
    argv = ["--interactions", str(raw / "pairs.csv"), "--output", str(unrelated), *overwrite, *LOCAL]
    status, err = ingest(capsys, *argv)
    assert status == 2
    line = one_error_line(err)
    assert "holds no manifest.json written by videorec ingest, so it is not a dataset (e.g." in line
    assert "pass --overwrite" not in line
    assert snapshot(tmp_path) == before


def test_a_dataset_holding_a_file_ingest_did_not_write_is_not_replaced(raw, dataset, tmp_path, capsys):
    out = tmp_path / "dataset"
    shutil.copytree(dataset, out)
    (out / "tables" / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    argv = ["--interactions", str(raw / "pairs.csv"), "--output", str(out), "--overwrite", *LOCAL]
    status, err = ingest(capsys, *argv)
    assert status == 2
    assert "holds files that videorec ingest did not write (e.g. tables/notes.txt)" in one_error_line(err)
    assert snapshot(tmp_path) == before


def test_overwrite_still_replaces_a_dataset_ingest_wrote(raw, dataset, tmp_path, capsys):
    out = tmp_path / "dataset"
    shutil.copytree(dataset, out)
    (out / "train" / "train-000777.tar").write_bytes(b"an older run's shard: a name ingest gives")
    argv = [
        "--interactions",
        str(raw / "pairs.csv"),
        "--output",
        str(out),
        "--overwrite",
        "--max-seq-len",
        "4",
    ]
    status, err = ingest(capsys, *argv, *LOCAL)
    assert status == 0, err
    assert json.loads((out / "manifest.json").read_text())["max_seq_len"] == 4
    assert not (out / "train" / "train-000777.tar").exists()
    assert leftovers(tmp_path) == [] and not Path(lock_path(str(out))).exists()


# ---------------------------------------------------------------------------------------------- 3. one writer


def test_a_second_ingest_to_the_same_output_exits_3_naming_the_first(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    first = child("ingest", *with_videos(inputs), "--output", str(out), *LOCAL)
    try:
        deadline = time.monotonic() + 120
        while not any(tmp_path.glob(".out.staging-*")):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, err = ingest(capsys, *with_videos(inputs), "--output", str(out), *LOCAL)
    finally:
        _, first_err = first.communicate(timeout=300)
    assert status == 3
    line = one_error_line(err)
    assert f"--output {out} is being written by run {socket.gethostname()}:{first.pid} (started" in line
    assert first.returncode == 0, first_err
    assert json.loads((out / "manifest.json").read_text())["has_frames"]
    assert leftovers(tmp_path) == [] and not Path(lock_path(str(out))).exists()


def test_a_lock_file_left_by_a_killed_run_does_not_block_the_next(raw, tmp_path, capsys):
    out = tmp_path / "out"
    Path(lock_path(str(out))).write_text("otherhost:1 (started 2026-01-01T00:00:00+0000)\n")
    status, err = ingest(capsys, "--interactions", str(raw / "pairs.csv"), "--output", str(out), *LOCAL)
    assert status == 0, err  # the kernel released the dead holder's flock; only the file was left
    assert not Path(lock_path(str(out))).exists()


# ---------------------------------------------------------------------------------------------- 4. mount point


@contextlib.contextmanager
def mounted_tmpfs(folder: Path):
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_an_output_at_a_mount_point_is_refused_before_the_job(raw, tmp_path, capsys):
    with mounted_tmpfs(tmp_path / "mnt") as mount:
        status, err = ingest(capsys, "--interactions", str(raw / "pairs.csv"), "--output", str(mount), *LOCAL)
        assert status == 2
        assert f"--output {mount} is a mount point" in one_error_line(err)
        assert f"give a folder inside it, e.g. {mount / 'dataset'}" in err
        assert os.listdir(mount) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt"]


# ---------------------------------------------------------------------------------------------- --dataset-root


@pytest.mark.parametrize("where", ["inputs", "parent", "unrelated"])
def test_a_dataset_root_beside_other_files_deletes_none_of_them(
    raw, inputs, unrelated, tmp_path, capsys, where
):
    root = target(where, inputs, unrelated)
    mine = root / "versions" / "mine"
    mine.mkdir(parents=True)
    (mine / "keep.txt").write_text("a folder the project did not write")
    before = snapshot(tmp_path)
    argv = ["--interactions", str(inputs / "pairs.csv"), "--dataset-root", str(root), "--keep", "1", *LOCAL]
    for _ in range(2):  # the second run prunes the first version, and only that
        status, err = ingest(capsys, *argv)
        assert status == 0, err
    after = snapshot(tmp_path)
    assert {path: after.get(path) for path in before} == before
    assert len([p for p in (root / "versions").iterdir() if p.name != "mine"]) == 1


# ---------------------------------------------------------------------------------------------- 5. experiment, synth


def test_experiment_refuses_a_folder_it_did_not_write(dataset, unrelated, tmp_path, capsys):
    before = snapshot(tmp_path)
    status = videorec(["experiment", "--data", str(dataset), "--output", str(unrelated)])
    assert status == 2
    line = one_error_line(capsys.readouterr().err, "experiment")
    assert "holds files videorec experiment did not write (e.g. results.csv)" in line
    assert snapshot(tmp_path) == before


def test_an_experiment_rerun_on_another_dataset_version_is_refused_before_any_arm(dataset, tmp_path, capsys):
    out = tmp_path / "exp"
    earlier = {"dataset_version": "an-earlier-version", "settings": {}}
    claim_folder(out, earlier, restart=False)
    before = snapshot(tmp_path)
    status = videorec(["experiment", "--data", str(dataset), "--output", str(out)])
    assert status == 2
    version = json.loads((dataset / "manifest.json").read_text())["dataset_version"]
    line = one_error_line(capsys.readouterr().err, "experiment")
    assert f"holds arms of dataset version 'an-earlier-version', but --data is version '{version}'" in line
    assert "pass --restart" in line
    assert snapshot(tmp_path) == before


def test_an_experiment_folder_refuses_another_dataset_version_or_settings_unless_restart(tmp_path):
    out = tmp_path / "exp"
    first = {"dataset_version": "aaa", "settings": {"preset": "tiny", "seed": 0}}
    claim_folder(out, first, restart=False)
    (out / "arms" / "id").mkdir(parents=True)
    (out / "arms" / "id" / "arm.json").write_text("{}")
    (out / "results.csv").write_text("arm\n")
    (out / "notes.txt").write_text("the user's notes, kept by --restart")
    claim_folder(out, first, restart=False)  # the same inputs resume
    assert (out / "arms" / "id" / "arm.json").exists()
    for other, message in (
        ({**first, "dataset_version": "bbb"}, "dataset version 'aaa', but --data is version 'bbb'"),
        ({**first, "settings": {"preset": "tiny", "seed": 1}}, "other settings (seed: 0 -> 1)"),
    ):
        with pytest.raises(ValueError, match="pass --restart") as refused:
            claim_folder(out, other, restart=False)
        assert message in str(refused.value)
    claim_folder(out, {**first, "dataset_version": "bbb"}, restart=True)
    assert sorted(p.name for p in out.iterdir()) == [EXPERIMENT_FILE, "notes.txt"]
    assert json.loads((out / EXPERIMENT_FILE).read_text())["dataset_version"] == "bbb"


def test_an_experiment_restart_deletes_only_the_arm_files_it_wrote(tmp_path):
    out = tmp_path / "exp"
    record = {"dataset_version": "aaa", "settings": {}}
    claim_folder(out, record, restart=False)
    arm = out / "arms" / "full-tiny"
    (arm / "checkpoints").mkdir(parents=True)
    for name in ("arm.json", "step.json", "results.json", "metrics.jsonl", "checkpoints/best.pt"):
        (arm / name).write_text("{}")
    (out / "arms" / "id").mkdir()
    (out / "arms" / "id" / "arm.json").write_text("{}")
    (arm / "checkpoints" / "my-backup.pt").write_text("the user's")
    (out / "arms" / "README.txt").write_text("the user's")

    claim_folder(out, {**record, "dataset_version": "bbb"}, restart=True)

    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == ["arms/README.txt", "arms/full-tiny/checkpoints/my-backup.pt", EXPERIMENT_FILE]


def synth_argv(out: Path) -> list[str]:
    sizes = ["--users", "4", "--items", "6", "--categories", "2", "--min-interactions", "3"]
    return ["synth", "--out", str(out), "--overwrite", *sizes, "--max-interactions", "4", "--workers", "1"]


def test_synth_overwrite_deletes_nothing_it_did_not_write(raw, tmp_path, capsys):
    out = tmp_path / "raw"
    shutil.copytree(raw, out)
    (out / "videos" / "holiday.mov").write_bytes(b"the user's own video")
    (out / "notes.txt").write_text("kept")
    before = snapshot(tmp_path)
    assert videorec(synth_argv(out)) == 2
    assert (
        "holds files synth did not write (e.g. holiday.mov); nothing was replaced" in capsys.readouterr().err
    )
    assert snapshot(tmp_path) == before


def test_synth_overwrite_refuses_files_that_are_not_synth_output(tmp_path, capsys):
    out = tmp_path / "logs"
    out.mkdir()
    (out / "pairs.csv").write_text("user,item,timestamp\nreal,data,1\n")
    (out / "videos").mkdir()
    before = snapshot(tmp_path)
    assert videorec(synth_argv(out)) == 2
    assert "holds no synth.json, so its files are not synth output" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
