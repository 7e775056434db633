"""A trainer that checks what it reads (issue 12, item 6): one test per case.

Each asserts the exit status, the one-line message (``videorec train: error: ...``, no traceback),
and what the run folder holds afterwards: nothing for a refusal before training, no results and no
temporary files for a refusal during it. Datasets are the small hand-written ones of
``tests/fixtures_dataset.py``; ID-only runs use the ``id`` encoder, so each run takes seconds.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import shutil
import threading
from pathlib import Path

import pytest
import torch

from tests.fixtures_dataset import rewrite_shard, solid_frames, write_dataset
from trainer.dataset import explain_frame_size, load_dataset
from trainer.evaluate_cli import main as evaluate_main
from trainer.train import main as train_main

ID_RUN = "--preset tiny --encoder id --epochs 1 --batch-size 8 --no-progress"
VIDEO_RUN = "--preset tiny --encoder tiny --epochs 1 --batch-size 8 --frame-size 8 --no-progress"


def _sequences(users: int = 24, items: int = 12, shift: int = 0) -> dict[str, list[str]]:
    return {str(u): [str((u + t * (1 + shift)) % items + 1) for t in range(7)] for u in range(users)}


@pytest.fixture(scope="module")
def id_data(tmp_path_factory) -> Path:
    """ID-only, version ``v1``: 24 users, 12 items, three train shards."""
    return write_dataset(tmp_path_factory.mktemp("v1") / "ds", _sequences(), max_seq_len=5, version="v1")


@pytest.fixture(scope="module")
def id_data_v2(tmp_path_factory) -> Path:
    """Another version (``v2``) of the same 12 items."""
    folder = tmp_path_factory.mktemp("v2") / "ds"
    return write_dataset(folder, _sequences(shift=1), max_seq_len=5, version="v2")


@pytest.fixture(scope="module")
def frames_data(tmp_path_factory) -> Path:
    return write_dataset(
        tmp_path_factory.mktemp("frames") / "ds", _sequences(), frames=solid_frames(12, 2), max_seq_len=5
    )


@pytest.fixture(scope="module")
def id_run(id_data, tmp_path_factory) -> Path:
    """A finished one-epoch ``id`` run on ``v1`` (copied by the tests that change it)."""
    run = tmp_path_factory.mktemp("id-run") / "run"
    assert train_main(["--data", str(id_data), "--output", str(run), *ID_RUN.split()]) == 0
    return run


def train(capsys, *argv: str) -> tuple[int, str, str]:
    """``videorec train ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = train_main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def evaluate(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = evaluate_main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def error_line(err: str, command: str = "train") -> str:
    """The one ``videorec COMMAND: error: ...`` line of ``err`` (warnings may come before it)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"videorec {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def copy(folder: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(folder, tmp_path / name))


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temporary_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------- flags and data


def test_train_with_a_data_path_that_does_not_exist(tmp_path, capsys):
    run = tmp_path / "run"
    status, _, err = train(capsys, "--data", str(tmp_path / "nowhere"), "--output", str(run), *ID_RUN.split())
    assert status == 2
    line = error_line(err)
    assert "nowhere does not exist" in line and "give a dataset folder written by videorec ingest" in line
    assert not run.exists()


def test_train_on_a_folder_without_a_manifest(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run"
    status, _, err = train(capsys, "--data", str(tmp_path / "empty"), "--output", str(run), *ID_RUN.split())
    assert status == 2
    assert "holds neither manifest.json nor LATEST" in error_line(err)
    assert not run.exists()


def test_train_with_an_unknown_encoder(id_data, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--data", str(id_data), "--output", str(run), *ID_RUN.split(), "--encoder", "r4d_18"]
    status, _, err = train(capsys, *argv)
    assert status == 2
    line = error_line(err)
    assert "unknown --encoder 'r4d_18'; choose one of tiny" in line and "id, frozen" in line
    assert not run.exists()


@pytest.mark.parametrize("damage", ["not-json", "counts", "missing-part", "unreadable-part"])
def test_a_missing_or_unsound_manifest_is_refused(id_data, tmp_path, capsys, damage):
    data = copy(id_data, tmp_path, "ds")
    manifest = json.loads((data / "manifest.json").read_text())
    expected = {
        "not-json": "not a JSON manifest",
        "counts": "rows: 169 seen != 168 accounted for",
        "missing-part": "part-00000.parquet, a part of the items table listed in the manifest, is missing",
        "unreadable-part": "part-00000.parquet is not a readable part of the sequences table",
    }[damage]
    if damage == "not-json":
        (data / "manifest.json").write_text('{"format_version": 2,')
    elif damage == "counts":
        manifest["counts"]["rows_read"] += 1
        (data / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "missing-part":
        (data / "tables/items/part-00000.parquet").unlink()
    else:
        (data / "tables/sequences/part-00000.parquet").write_bytes(b"PAR1 cut short")
    run = tmp_path / "run"
    status, _, err = train(capsys, "--data", str(data), "--output", str(run), *ID_RUN.split())
    assert status == 2
    line = error_line(err)
    assert expected in line and "write it again with videorec ingest" in line
    assert not run.exists()


def test_a_sampler_with_frames_but_no_size_is_refused(frames_data, tmp_path, capsys):
    data = copy(frames_data, tmp_path, "ds")
    manifest = json.loads((data / "manifest.json").read_text())
    del manifest["sampler"]["size"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    status, _, err = train(capsys, "--data", str(data), "--output", str(tmp_path / "run"), *VIDEO_RUN.split())
    assert status == 2
    assert "does not give num_frames and size [height, width]" in error_line(err)


def test_the_stored_frame_size_comes_from_the_manifest_and_an_upscaling_frame_size_is_warned(
    frames_data, tmp_path, capsys, caplog
):
    dataset = load_dataset(str(frames_data))  # frames stored at 12 x 12, 2 per item
    assert (dataset.frames.height, dataset.frames.width, dataset.num_frames) == (12, 12, 2)
    line, upscaled = explain_frame_size(dataset, 8, squash=False)
    assert not upscaled and line.startswith("frames stored at 12x12") and "cropped to 8x8" in line
    line, upscaled = explain_frame_size(dataset, 16, squash=True)
    assert upscaled and "squashed to 16x16" in line and "pass --frame-size 12 or less" in line
    caplog.set_level(logging.INFO)
    argv = ["--data", str(frames_data), "--output", str(tmp_path / "run"), *VIDEO_RUN.split()]
    status, _, _ = train(capsys, *argv, "--frame-size", "16")
    assert status == 0  # kept: the encoder's input side is a model choice, only said
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("upscaled, which adds no detail" in message for message in warned)


# ---------------------------------------------------------------------------------------------- shards


def test_a_shard_whose_size_is_not_the_manifests_is_refused_before_training(id_data, tmp_path, capsys):
    data = copy(id_data, tmp_path, "ds")
    with open(data / "train/train-000001.tar", "ab") as shard:
        shard.write(b"\0" * 512)
    run = tmp_path / "run"
    status, _, err = train(capsys, "--data", str(data), "--output", str(run), *ID_RUN.split())
    assert status == 2
    line = error_line(err)
    assert "train-000001.tar has" in line and "bytes, the manifest says" in line
    assert not run.exists()


def test_a_shard_whose_sha256_is_not_the_manifests_stops_the_run(id_data, tmp_path, capsys):
    data = copy(id_data, tmp_path, "ds")
    shard = data / "train/train-000002.tar"
    content = bytearray(shard.read_bytes())
    content[-1] ^= 0xFF  # in the tar's end padding: every sample still reads, the checksum differs
    shard.write_bytes(bytes(content))
    run = tmp_path / "run"
    status, _, err = train(capsys, "--data", str(data), "--output", str(run), *ID_RUN.split())
    assert status == 2
    assert "train-000002.tar: its sha256 differs from the manifest's" in error_line(err)
    assert not (run / "results.json").exists() and not (run / "checkpoints").exists()
    assert temporary_files(tmp_path) == []


def test_a_remote_shard_whose_size_is_not_the_manifests_is_refused(id_data, tmp_path, capsys):
    data = copy(id_data, tmp_path, "ds")
    with open(data / "train/train-000000.tar", "ab") as shard:
        shard.write(b"\0" * 512)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/ds"
        status, _, err = train(capsys, "--data", url, "--output", str(tmp_path / "run"), *ID_RUN.split())
    finally:
        server.shutdown()
    assert status == 2
    assert f"shard {url}/train/train-000000.tar has" in error_line(err)
    assert not (tmp_path / "run/results.json").exists()


def test_damaged_jpegs_are_skipped_and_counted_and_the_threshold_applies(frames_data, tmp_path, capsys):
    data = copy(frames_data, tmp_path, "ds")
    seen = 0

    def damage(name: str, content: bytes) -> bytes:
        nonlocal seen
        if not name.endswith(".jpg"):
            return content
        seen += 1
        return content[: len(content) // 2] if seen % 7 == 0 else content  # 1 in 7, cut short

    for shard in ("train/train-000000.tar", "train/train-000001.tar", "train/train-000002.tar"):
        rewrite_shard(data, shard, damage)
    status, _, err = train(
        capsys, "--data", str(data), "--output", str(tmp_path / "strict"), *VIDEO_RUN.split()
    )
    assert status == 4
    assert "corrupt samples and 0 failed shard reads, more than --max-lost-fraction 0.001" in error_line(err)
    assert not (tmp_path / "strict/results.json").exists()
    run = tmp_path / "lenient"
    argv = ["--data", str(data), "--output", str(run), *VIDEO_RUN.split(), "--max-lost-fraction", "1"]
    status, out, err = train(capsys, *argv)
    assert status == 0, err
    lost = json.loads((run / "results.json").read_text())["lost"]
    assert 0 < lost["skipped_samples"] <= lost["planned_samples"] and lost["failed_reads"] == 0
    assert temporary_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------- run folders


def test_a_run_folder_of_another_dataset_version_needs_no_resume(id_run, id_data_v2, tmp_path, capsys):
    run = copy(id_run, tmp_path, "run")
    before = snapshot(run)
    status, _, err = train(capsys, "--data", str(id_data_v2), "--output", str(run), *ID_RUN.split())
    assert status == 2
    line = error_line(err)
    assert "holds a checkpoint of dataset version 'v1', but --data" in line and "is version 'v2'" in line
    assert "pass --no-resume to start over there, or choose another --output" in line
    assert snapshot(run) == before
    status, _, err = train(
        capsys, "--data", str(id_data_v2), "--output", str(run), *ID_RUN.split(), "--no-resume"
    )
    assert status == 0, err
    assert json.loads((run / "results.json").read_text())["dataset_version"] == "v2"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["dataset_version"] for r in records if r["type"] == "run"} == {"v2"}


def test_a_resumed_run_says_from_which_step_and_where_its_results_are(
    id_run, id_data, tmp_path, capsys, caplog
):
    run = copy(id_run, tmp_path, "run")
    steps = torch.load(run / "checkpoints/last.pt", weights_only=True)["step"]
    caplog.set_level("INFO", logger="trainer")
    argv = ["--data", str(id_data), "--output", str(run), *ID_RUN.split(), "--epochs", "2"]
    status, out, err = train(capsys, *argv)
    assert status == 0, err
    assert f"resumed from step {steps} ({run / 'checkpoints/last.pt'})" in caplog.text
    assert f"results: {run / 'results.json'}" in out and f"metrics: {run / 'metrics.jsonl'}" in out
    assert f"checkpoints: {run / 'checkpoints/best.pt'} (best validation)" in out
    assert json.loads((run / "results.json").read_text())["steps"] == 2 * steps


def test_a_damaged_last_checkpoint_is_refused_with_the_fix(id_run, id_data, tmp_path, capsys):
    run = copy(id_run, tmp_path, "run")
    last = run / "checkpoints/last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    before = snapshot(run)
    status, _, err = train(capsys, "--data", str(id_data), "--output", str(run), *ID_RUN.split())
    assert status == 2
    line = error_line(err)
    assert "last.pt does not load" in line and "damaged or cut short; pass --no-resume to start over" in line
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("what", ["missing", "truncated", "foreign"])
def test_evaluate_refuses_a_missing_damaged_or_foreign_checkpoint(id_run, tmp_path, capsys, what):
    path = tmp_path / "best.pt"
    if what == "truncated":
        path.write_bytes((id_run / "checkpoints/best.pt").read_bytes()[:4096])
    elif what == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    status, _, err = evaluate(capsys, "--checkpoint", str(path))
    assert status == 2
    line = error_line(err, "evaluate")
    assert {
        "missing": f"checkpoint {path} does not exist",
        "truncated": "does not load",
        "foreign": "is not a videorec run checkpoint (it has no model, config",
    }[what] in line
    assert "give the checkpoints/best.pt or last.pt of a videorec train run" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if what == "missing" else ["best.pt"])


def test_evaluate_refuses_a_frames_model_on_an_id_only_dataset(frames_data, id_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        train_main(["--data", str(frames_data), "--output", str(run), *VIDEO_RUN.split(), "--max-steps", "1"])
        == 0
    )
    argv = [
        "--checkpoint",
        str(run / "checkpoints/best.pt"),
        "--data",
        str(id_data),
        "--output",
        str(tmp_path / "m.json"),
    ]
    status, _, err = evaluate(capsys, *argv)
    assert status == 2
    line = error_line(err, "evaluate")
    assert "encoder 'tiny' needs frames but --data" in line and "has none (ID-only)" in line
    assert not (tmp_path / "m.json").exists()


def test_evaluate_warns_when_the_dataset_version_differs(id_run, id_data_v2, tmp_path, capsys, caplog):
    argv = ["--checkpoint", str(id_run / "checkpoints/best.pt"), "--data", str(id_data_v2)]
    status, out, err = evaluate(capsys, *argv, "--output", str(tmp_path / "m.json"))
    assert status == 0, err
    assert "the checkpoint was trained on dataset version v1; scoring on version v2" in caplog.text
    assert json.loads((tmp_path / "m.json").read_text())["dataset_version"] == "v2"
