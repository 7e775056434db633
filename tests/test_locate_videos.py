"""Where videos are found (issue 23 item 16, issue 21 item 3): any-extension patterns, what a path that is
not a video file is called, and the titles and video-map CSVs read in splits and joined by key."""

from __future__ import annotations

import os
import shutil

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.dataset_files import dataset_failures, dataset_table
from tests.test_bad_input import FRAMES, LOCAL, ingest
from transforms.decode.container import open_source
from transforms.decode.types import VideoError
from transforms.decode.video_source import not_a_file
from transforms.fingerprint import stat_video
from transforms.keyed_csv import TITLES, VIDEO_MAP, ReadKeyedCsv, rejected_rows
from transforms.locate_videos import FAILED, LocateVideos

# ---------------------------------------------------------------------------------------------- not a file


def test_a_path_that_is_not_a_regular_file_is_named_for_what_it_is(tmp_path):
    (tmp_path / "dir.mp4").mkdir()
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    assert not_a_file(str(tmp_path / "dir.mp4")).endswith("dir.mp4 is a directory, not a regular file")
    assert "is a FIFO (named pipe), not a regular file" in not_a_file(str(tmp_path / "pipe.mp4"))
    assert not_a_file("/dev/null") == "/dev/null is a character device, not a regular file"
    assert "loop.mp4 is a symbolic link loop" in not_a_file(str(tmp_path / "loop.mp4"))
    assert "gone.mp4, which does not exist" in not_a_file(str(tmp_path / "dangling.mp4"))
    assert not_a_file(str(tmp_path / "none.mp4")) == f"no such video file: {tmp_path / 'none.mp4'}"


def test_a_symlink_loop_is_a_missing_video_to_nightly_fingerprints_not_a_crash(tmp_path):
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    with pytest.raises(FileNotFoundError, match="symbolic link loop"):
        stat_video(str(tmp_path / "loop.mp4"))


@pytest.mark.parametrize("name", ["dir.mp4", "pipe.mp4", "loop.mp4"])
def test_the_decoder_reports_a_directory_fifo_or_link_loop_as_such(tmp_path, name):
    (tmp_path / "dir.mp4").mkdir()
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    with pytest.raises(VideoError) as caught:
        open_source(str(tmp_path / name))  # a FIFO is never opened, so this cannot block
    assert caught.value.kind == "not_found"
    assert "no such video file" not in str(caught.value)
    assert ("symbolic link loop" if name == "loop.mp4" else "not a regular file") in str(caught.value)


# ---------------------------------------------------------------------------------------------- {item}.*


def assert_located(item_ids: list[str], root, pattern: str, located: list, failed: list) -> None:
    """``LocateVideos`` on ``item_ids`` yields exactly ``located`` pairs and ``failed`` as
    ``(item_id, reason, message)``."""
    with BeamTestPipeline(runner="FnApiRunner") as pipeline:
        outputs = pipeline | beam.Create(item_ids) | LocateVideos(str(root), pattern, None)
        assert_that(outputs.located, equal_to(located), label="Located")
        reasons = outputs[FAILED] | beam.Map(lambda f: (f["item_id"], f["reason"], f["message"]))
        assert_that(reasons, equal_to(failed), label="Failed")


def test_an_any_extension_pattern_finds_one_file_per_item_whatever_its_container(tmp_path):
    for name in ("1.mp4", "2.mkv", "3.webm", "3.mov", "5.a.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    located = [
        ("1", str(tmp_path / "1.mp4")),
        ("2", str(tmp_path / "2.mkv")),
        ("5.a", str(tmp_path / "5.a.mp4")),
    ]
    failed = [
        (
            "3",
            "ambiguous_video",
            f"2 files match 3.*: {tmp_path}/3.mov, {tmp_path}/3.webm; keep one, or use --video-map",
        ),
        ("4", "not_found", "no file in the video folder matches 4.*"),
        ("5", "not_found", "no file in the video folder matches 5.*"),  # 5.a.mp4 is item 5.a's
        ("../x", "bad_item_id", "the item ID makes the video path '../x.*', outside the listed video folder"),
    ]
    assert_located(["1", "2", "3", "4", "5", "5.a", "../x"], tmp_path, "{item}.*", located, failed)


def test_an_any_extension_pattern_in_a_subfolder_lists_that_folder(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "7.mkv").write_bytes(b"x")
    (tmp_path / "7.mp4").write_bytes(b"x")
    assert_located(["7"], tmp_path, "clips/{item}.*", [("7", str(tmp_path / "clips" / "7.mkv"))], [])


def test_ingest_takes_a_folder_of_mixed_containers_with_an_any_extension_pattern(synth, tmp_path, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(synth / "videos", videos)
    for item, extension in (("1", "mkv"), ("2", "mov"), ("3", "webm")):
        (videos / f"{item}.mp4").rename(videos / f"{item}.{extension}")
    shutil.copy(videos / "4.mp4", videos / "4.mkv")  # two files for item 4
    argv = [
        "--interactions",
        str(synth / "pairs.csv"),
        "--videos",
        str(videos),
        "--video-pattern",
        "{item}.*",
    ]
    status, err = ingest(capsys, *argv, "--output", str(tmp_path / "out"), *FRAMES, *LOCAL)
    assert status == 0, err
    encoded = set(dataset_table(tmp_path / "out", "items").column("item_id").to_pylist())
    failures = {f["item_id"]: f for f in dataset_failures(tmp_path / "out") if f["kind"] == "item"}
    assert {"1", "2", "3"} <= encoded and "4" not in encoded
    assert failures["4"]["reason"] == "ambiguous_video" and "4.mkv" in failures["4"]["message"]


def test_when_no_video_is_found_the_message_names_the_video_map(synth, tmp_path, capsys):
    argv = ["--interactions", str(synth / "pairs.csv"), "--videos", str(synth / "videos")]
    status, err = ingest(
        capsys, *argv, "--video-pattern", "{item}.mkv", "--output", str(tmp_path / "o"), *LOCAL
    )
    assert status == 2 and "--video-map" in err and "{item}.*" in err
    status, err = ingest(
        capsys, *argv, "--video-pattern", "{item}/v.*", "--output", str(tmp_path / "o"), *LOCAL
    )
    assert status == 2 and "only in the file name" in err


# ---------------------------------------------------------------------------------------------- keyed CSVs


def read_keyed(path, kind, split_bytes: int, expected: list) -> dict:
    """``ReadKeyedCsv`` on ``path`` in ``split_bytes`` splits yields exactly ``expected``; returns the
    rejected rows by reason (from the job's counters, as ``run_stats.json`` gets them)."""
    pipeline = BeamTestPipeline(runner="FnApiRunner")
    assert_that(pipeline | ReadKeyedCsv(str(path), kind, split_bytes), equal_to(expected))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query()["counters"]
    return rejected_rows(
        {c.key.metric.name: c.committed for c in counters if c.key.metric.namespace == "videorec"}
    )


TITLES_TEXT = 'item_id,title\n1,"A title, with a comma"\n2,"Two\nlines"\n,no item\n3\n'


@pytest.mark.parametrize("split_bytes", [3, 10, 1 << 20])
def test_titles_are_read_in_splits_whole_and_every_rejected_row_is_counted(tmp_path, split_bytes):
    path = tmp_path / "titles.csv"
    path.write_bytes(TITLES_TEXT.encode() + b'6,\xff\xfe\n7,Seven\n4,"never closed\n5,Five\n')
    expected = [("1", "A title, with a comma"), ("2", "Two\nlines"), ("7", "Seven")]
    assert read_keyed(path, TITLES, split_bytes, expected) == {
        "titles": {"bad_encoding": 1, "bad_quoting": 2, "empty_item": 1, "missing_field": 1}
    }


def test_a_video_map_resolves_relative_uris_against_its_folder(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("item,uri\n1,videos/1.mp4\n2,/abs/2.mp4\n3,gs://b/3.mp4\n")
    expected = [("1", f"{tmp_path}/videos/1.mp4"), ("2", "/abs/2.mp4"), ("3", "gs://b/3.mp4")]
    assert read_keyed(path, VIDEO_MAP, 8, expected) == {}
