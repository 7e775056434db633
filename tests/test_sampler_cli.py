"""``videorec frames``: JPEGs + JSON per video, one line each, bad videos reported and exit 1 at the end."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pipeline.cli import main as videorec
from pipeline.frames import main


@pytest.mark.shared_data
def test_frames_command_writes_jpegs_and_json_and_fails_only_at_the_end(shared_data, tmp_path, capsys):
    videos = shared_data / "videos"
    out = tmp_path / "frames"
    argv = [
        str(videos / "mp4parse-rust__chunk_out_of_range.mp4"),
        str(videos / "microlens50k_via_sananm__10034.mp4"),
        str(videos / "jsonize__iphone_rotated.mov"),
        "--out",
        str(out),
        "--size",
        "224",
        "--resize",
        "squash",
        "--quality",
        "80",
    ]
    assert main(argv) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FAIL  mp4parse-rust__chunk_out_of_range: corrupt:")
    assert lines[1].startswith("ok    microlens50k_via_sananm__10034: hevc 1280x720")
    assert lines[2].startswith("ok    jsonize__iphone_rotated: h264 320x568 rot 270")
    assert lines[-1] == f"2 of 3 videos sampled into {out}"
    record = json.loads((out / "jsonize__iphone_rotated.json").read_text())
    assert record["frames"] == [f"jsonize__iphone_rotated.{i}.jpg" for i in range(5)]
    assert record["rotation"] == 270 and record["width"] == 320 and record["height"] == 568
    for name in record["frames"]:
        with Image.open(out / name) as image:
            assert image.size == (224, 224) and image.format == "JPEG"
    assert not list(out.glob("mp4parse-rust__chunk_out_of_range*"))


@pytest.mark.shared_data
def test_frames_subcommand_is_wired_into_videorec(shared_data, tmp_path, capsys):
    video = shared_data / "videos" / "nwb-video-widgets__stub_mjpeg.avi"
    status = videorec(["frames", str(video), "--out", str(tmp_path), "--num-frames", "3", "--in-process"])
    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "nwb-video-widgets__stub_mjpeg.0.jpg",
        "nwb-video-widgets__stub_mjpeg.1.jpg",
        "nwb-video-widgets__stub_mjpeg.2.jpg",
        "nwb-video-widgets__stub_mjpeg.json",
    ]
    assert "1 of 1 videos sampled" in capsys.readouterr().out


def test_bad_options_exit_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["x.mp4", "--out", str(tmp_path), "--num-frames", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "videorec frames: error: argument --num-frames: must be at least 1, got 0 (see videorec frames --help)"
    ]
