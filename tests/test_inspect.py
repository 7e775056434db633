"""``videorec inspect``: a whole dataset passes; damaged files, shards and counts are reported."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from pipeline.inspect import main, verify_dataset
from pipeline.main import run
from pipeline.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    synth = tmp_path_factory.mktemp("synth")
    generate(
        synth,
        SynthConfig(
            users=10, items=6, categories=3, seed=5, max_interactions=6, min_seconds=1.0, max_seconds=1.0
        ),
        workers=2,
    )
    output = tmp_path_factory.mktemp("inspect") / "v1"
    args = [
        "--interactions",
        str(synth / "pairs.csv"),
        "--videos",
        str(synth / "videos"),
        "--output",
        str(output),
    ]
    run(
        [
            *args,
            "--frame-size",
            "32",
            "--shard-max-samples",
            "4",
            "--direct_running_mode=in_memory",
            "--quiet",
        ]
    )
    return output


@pytest.fixture
def damaged(dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    return copy


def test_a_fresh_dataset_passes_and_samples_dump_as_images(dataset, tmp_path, capsys):
    assert verify_dataset(str(dataset)) == []
    out = tmp_path / "frames"
    assert main([str(dataset), "--sample", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dataset OK" in printed and "encoded" in printed
    images = sorted(out.glob("*.jpg"))
    assert len(images) == 10 and len(list(out.glob("*.json"))) == 2
    assert Image.open(images[0]).size == (32, 32)
    sheets = sorted(out.glob("*.sheet.png"))
    assert len(sheets) == 2
    with Image.open(sheets[0]) as sheet:  # 5 frames of 32 px in a row under a label
        assert sheet.width >= 5 * 32 and 32 < sheet.height < 2 * 32 + 20
        key = sheets[0].name.split(".")[0]
        first_frame = Image.open(out / f"{key}.0.jpg").convert("RGB")
        assert sheet.crop((2, 16, 34, 48)).tobytes() == first_frame.tobytes()


def test_flipped_byte_in_a_shard_is_a_checksum_problem(damaged, capsys):
    manifest = json.loads((damaged / "manifest.json").read_text())
    shard = damaged / manifest["shards"]["train"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the data of either train layout (a tar, or a small .tar.gz)
    shard.write_bytes(bytes(data))
    assert any("sha256" in p for p in verify_dataset(str(damaged)))
    assert main([str(damaged)]) == 1
    assert "PROBLEM" in capsys.readouterr().out


def test_missing_shard_and_miscounted_failures_are_reported(damaged):
    manifest = json.loads((damaged / "manifest.json").read_text())
    (damaged / manifest["shards"]["items"][-1]["path"]).unlink()
    manifest["counts"]["rows_read"] += 1
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_dataset(str(damaged))
    assert any("missing" in p for p in problems)
    assert any("reconcile" in p for p in problems)


def test_unreadable_dataset_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "cannot read the manifest" in capsys.readouterr().err
