"""Gates everywhere results are made (issue 23, items 7 and 8): settings that cannot train are refused
before anything is read, a loss that turns NaN stops the run (exit 4), evaluation applies
``--max-lost-fraction``, and ``results.json`` / ``metrics.jsonl`` are strict JSON (null, never NaN).

Datasets are the small hand-written ones of ``tests/fixtures_dataset.py``; each run takes seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.fixtures_dataset import rewrite_shard, solid_frames, write_dataset
from tests.test_trainer_bad_input import ID_RUN, VIDEO_RUN, error_line, evaluate, train


def _sequences(users: int = 24, items: int = 12) -> dict[str, list[str]]:
    return {str(u): [str((u + t) % items + 1) for t in range(7)] for u in range(users)}


@pytest.fixture(scope="module")
def id_data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ids") / "ds", _sequences(), max_seq_len=5, version="v1")


@pytest.fixture(scope="module")
def frames_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames") / "ds"
    return write_dataset(folder, _sequences(), frames=solid_frames(12, 2), max_seq_len=5)


def strict_loads(text: str):
    """``json.loads`` that refuses the bare ``NaN`` / ``Infinity`` tokens strict parsers reject."""

    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------------------------------------- item 8


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--epochs 0", "--epochs must be at least 1, got 0"),
        ("--epochs -1", "--epochs must be at least 1, got -1"),
        ("--max-steps 0", "--max-steps must be at least 1, got 0"),
        ("--batch-size 0", "--batch-size must be at least 1, got 0"),
        ("--frame-size -3", "--frame-size must be at least 1, got -3"),
        ("--lr nan", "--lr must be a finite number above 0, got nan"),
        ("--lr inf", "--lr must be a finite number above 0, got inf"),
        ("--lr 0", "--lr must be a finite number above 0, got 0.0"),
        ("--encoder-lr -1", "--encoder-lr must be a finite number above 0, got -1.0"),
        ("--weight-decay nan", "--weight-decay must be a finite number of at least 0, got nan"),
        ("--dim 64 --num-heads 3", "--num-heads 3 does not divide the width --dim 64"),
    ],
)
def test_settings_that_cannot_train_are_refused_before_anything_is_read(
    id_data, tmp_path, capsys, flags, message
):
    run = tmp_path / "run"
    status, _, err = train(
        capsys, "--data", str(id_data), "--output", str(run), *ID_RUN.split(), *flags.split()
    )
    assert status == 2
    assert message in error_line(err)
    assert not run.exists()


def test_an_output_that_is_a_file_is_refused(id_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.write_text("not a folder")
    status, _, err = train(capsys, "--data", str(id_data), "--output", str(run), *ID_RUN.split())
    assert status == 2
    assert f"--output {run} is a file; give a run folder" in error_line(err)
    assert run.read_text() == "not a folder"


def test_a_loss_that_turns_nan_stops_the_run_with_exit_4(id_data, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--data", str(id_data), "--output", str(run), *ID_RUN.split(), "--epochs", "3", "--lr", "1e30"]
    status, _, err = train(capsys, *argv)
    assert status == 4
    line = error_line(err)
    assert "the loss became" in line and "lower --lr or check the data" in line
    assert not (run / "results.json").exists()
    for record in (run / "metrics.jsonl").read_text().splitlines():
        strict_loads(record)


def test_results_and_metrics_are_strict_json_with_null_for_no_users(id_data, tmp_path, capsys):
    run = tmp_path / "run"
    status, _, err = train(capsys, "--data", str(id_data), "--output", str(run), *ID_RUN.split())
    assert status == 0, err
    results = strict_loads((run / "results.json").read_text())
    assert results["test"]["users/new"] == 0 and results["test"]["HR@10/new"] is None  # no new users
    assert results["test"]["HR@10"] is not None
    for record in (run / "metrics.jsonl").read_text().splitlines():
        strict_loads(record)
    scored = tmp_path / "scored.json"
    best = str(run / "checkpoints" / "best.pt")
    status, _, err = evaluate(capsys, "--checkpoint", best, "--output", str(scored))
    assert status == 0, err
    assert strict_loads(scored.read_text())["test"]["HR@10/new"] is None


# ---------------------------------------------------------------------------------------------- item 7


@pytest.fixture(scope="module")
def damaged_items(frames_data, tmp_path_factory) -> Path:
    """``frames_data`` whose second item shard (items 9-12) holds JPEGs cut short; train shards are sound."""
    data = Path(shutil.copytree(frames_data, tmp_path_factory.mktemp("damaged") / "ds"))
    rewrite_shard(
        data, "items/items-000001.tar", lambda name, b: b[: len(b) // 2] if name.endswith(".jpg") else b
    )
    return data


def test_evaluation_applies_max_lost_fraction_to_items_that_cannot_be_encoded(
    damaged_items, tmp_path, capsys
):
    strict = tmp_path / "strict"
    status, _, err = train(capsys, "--data", str(damaged_items), "--output", str(strict), *VIDEO_RUN.split())
    assert status == 4
    line = error_line(err)
    assert "4 of 12 items could not be encoded for evaluation (decode failures 4" in line
    assert "more than --max-lost-fraction 0.001" in line
    assert not (strict / "results.json").exists()

    lenient = tmp_path / "lenient"
    argv = [
        "--data",
        str(damaged_items),
        "--output",
        str(lenient),
        *VIDEO_RUN.split(),
        "--max-lost-fraction",
        "0.5",
    ]
    status, _, err = train(capsys, *argv)
    assert status == 0, err
    assert strict_loads((lenient / "results.json").read_text())["items"]["items_not_encoded"] == 4

    best = str(lenient / "checkpoints" / "best.pt")
    status, _, err = evaluate(capsys, "--checkpoint", best)  # the run's own 0.5: scored
    assert status == 0, err
    status, _, err = evaluate(capsys, "--checkpoint", best, "--max-lost-fraction", "0.1")
    assert status == 4
    assert "4 of 12 items could not be encoded" in error_line(err, "evaluate")


# ---------------------------------------------------------------------------------------------- item 14


def test_resuming_a_run_folder_of_another_encoder_is_refused(id_data, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--data", str(id_data), "--output", str(run), *ID_RUN.split(), "--checkpoint-every", "1"]
    assert train(capsys, *argv, "--max-steps", "1")[0] == 0
    status, _, err = train(capsys, *[a if a != "id" else "tiny" for a in argv], "--frame-size", "8")
    assert status == 2
    assert f"run folder {run} holds a checkpoint of --encoder 'id', but --encoder is 'tiny'" in error_line(
        err
    )


@pytest.mark.parametrize("shards", ["{root}/train/*.tar", "{root}/nothing-{{000000..000001}}.tar"])
def test_train_shards_that_match_nothing_are_refused(id_data, tmp_path, capsys, shards):
    run = tmp_path / "run"
    pattern = shards.format(root=id_data)
    status, _, err = train(
        capsys, "--data", str(id_data), "--output", str(run), *ID_RUN.split(), "--train-shards", pattern
    )
    assert status == 2
    assert f"--train-shards {pattern!r} names shards that are not there" in error_line(err)
    assert not run.exists()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: [m], "the manifest is not a JSON object"),
        (lambda m: {**m, "tables": []}, "tables is not an object"),
        (lambda m: {**m, "shards": None}, "shards is not an object"),
    ],
    ids=["list", "tables-list", "shards-null"],
)
def test_train_on_a_manifest_of_the_wrong_shape_is_one_line(id_data, tmp_path, capsys, change, problem):
    data = Path(shutil.copytree(id_data, tmp_path / "ds"))
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps(change(manifest)))
    status, _, err = train(capsys, "--data", str(data), "--output", str(tmp_path / "run"), *ID_RUN.split())
    assert status == 2
    assert problem in error_line(err)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--encoder r3d_18", "encoder 'r3d_18': pretrained weights KINETICS400_V1 are not on this machine"),
        ("--encoder-weights none", "--freeze top-k would keep a randomly initialised slowfast_r50 backbone"),
        (
            "--encoder r3d_18 --encoder-weights BOGUS",
            "unknown weights 'BOGUS'; known names: ['KINETICS400_V1']",
        ),
    ],
    ids=["other-encoder", "weights-none", "unknown-name"],
)
def test_the_paper_preset_takes_each_encoders_own_weights_or_none(
    frames_data, tmp_path, capsys, monkeypatch, flags, message
):
    """The paper preset's weights name is SlowFast's: another encoder takes its own Kinetics weights
    (here missing from an empty hub cache: the one-line fetch instructions), and ``none`` takes them off."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    run = tmp_path / "run"
    argv = ["--data", str(frames_data), "--output", str(run), "--preset", "paper", "--no-progress"]
    status, _, err = train(capsys, *argv, *flags.split())
    assert status == 2
    assert message in error_line(err)
    assert not run.exists()
