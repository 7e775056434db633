"""The synthetic dataset generator: determinism, decodable videos, really broken faults, agreeing tables."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.synth import SynthConfig, catalogue, command, generate
from pipeline.synth.config import BAD_ROW_KINDS

# Small but with every feature present: both codecs, portrait, rotations and each kind of fault.
CONFIG = SynthConfig(
    users=30,
    items=24,
    seed=7,
    min_seconds=1.0,
    max_seconds=2.0,
    portrait_fraction=0.3,
    rotation_fraction=0.4,
    missing_videos=1,
    truncated_videos=2,
    no_video_stream=1,
    corrupt_videos=1,
    bad_rows=8,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, generate(out, CONFIG, workers=1)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def healthy_items(summary: dict) -> list[dict]:
    return [item for item in summary["items"] if item["fault"] is None]


def fault_items(summary: dict, kind: str) -> list[str]:
    return [fault["item"] for fault in summary["faults"][kind]]


def parse_pair(line: str) -> tuple[str, str, int]:
    """A strict reader of one pairs.csv data line, as an ingest job would apply it."""
    fields = next(csv.reader([line]))
    if len(fields) != 3:
        raise ValueError(f"expected 3 fields, got {len(fields)}")
    user, item, timestamp = fields
    if not user or not item:
        raise ValueError("empty user or item")
    return user, item, int(timestamp)


def decode_all(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(container.streams.video[0]))


def test_same_seed_gives_identical_files_whatever_the_number_of_workers(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    generate(again, CONFIG, workers=2)
    first, second = tree_digest(out), tree_digest(again)
    assert (
        len(first) == CONFIG.items - CONFIG.missing_videos + 4
    )  # videos + pairs.csv/tsv, titles, synth.json
    assert first == second


def test_another_seed_gives_other_data(dataset, tmp_path):
    out, _ = dataset
    other = SynthConfig(users=30, items=24, seed=8, min_seconds=1.0, max_seconds=1.0, fps_choices=(10,))
    generate(tmp_path / "other", other, workers=1)
    assert (tmp_path / "other" / "pairs.csv").read_bytes() != (out / "pairs.csv").read_bytes()


def test_generate_refuses_to_mix_with_earlier_output_unless_asked(dataset, tmp_path):
    out, _ = dataset
    with pytest.raises(FileExistsError):
        generate(out, CONFIG, workers=1)
    tiny = SynthConfig(users=5, items=5, categories=2, min_seconds=0.5, max_seconds=0.5, fps_choices=(10,))
    generate(tmp_path / "tiny", tiny, workers=1)
    generate(tmp_path / "tiny", tiny, workers=1, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "tiny" / "videos").iterdir()) == [
        f"{i}.mp4" for i in range(1, 6)
    ]


def test_healthy_videos_decode_with_the_planted_codec_size_rate_and_rotation(dataset):
    out, summary = dataset
    seen = defaultdict(set)
    for item in healthy_items(summary):
        video = item["video"]
        with av.open(str(out / "videos" / f"{item['item']}.mp4")) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
            assert stream.codec_context.name == video["codec"]
            assert stream.average_rate == video["fps"]
        assert len(frames) == video["frames"]
        assert (frames[0].width, frames[0].height) == (video["coded_width"], video["coded_height"])
        assert {frame.rotation for frame in frames} == {video["rotation"]}
        assert any(frame.pict_type == av.video.frame.PictureType.B for frame in frames), "no B-frames"
        seen["codec"].add(video["codec"])
        seen["rotation"].add(video["rotation"] != 0)
        seen["portrait"].add(video["portrait"])
    assert seen == {"codec": {"h264", "hevc"}, "rotation": {True, False}, "portrait": {True, False}}


def test_rotated_videos_show_the_scene_upright_once_the_rotation_is_applied(dataset):
    """The scene's background is darker at the top; only the displayed picture must show that."""
    out, summary = dataset
    rotated = [item for item in healthy_items(summary) if item["video"]["rotation"]]
    assert rotated
    for item in rotated:
        stored = decode_all(out / "videos" / f"{item['item']}.mp4")[0]
        picture = np.rot90(stored.to_ndarray(format="rgb24"), k=stored.rotation // 90)
        brightness = picture.max(axis=2).astype(int)
        height, width = brightness.shape
        assert (width, height) == (item["video"]["width"], item["video"]["height"])
        top, bottom = (np.percentile(row, 20) for row in (brightness[0], brightness[-1]))  # background
        assert top + 15 < bottom, f"item {item['item']} is not upright"


def test_missing_videos_are_absent(dataset):
    out, summary = dataset
    missing = fault_items(summary, "missing_videos")
    assert len(missing) == CONFIG.missing_videos
    assert all(not (out / "videos" / f"{item}.mp4").exists() for item in missing)


def test_truncated_videos_claim_more_frames_than_decode(dataset):
    out, summary = dataset
    by_id = {item["item"]: item for item in summary["items"]}
    truncated = summary["faults"]["truncated_videos"]
    assert len(truncated) == CONFIG.truncated_videos
    for fault in truncated:
        path = out / fault["path"]
        assert path.stat().st_size == fault["bytes_kept"] < fault["bytes_before"]
        decoded = 0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.frames == by_id[fault["item"]]["video"]["frames"]
            try:
                for _ in container.decode(stream):
                    decoded += 1
            except av.error.InvalidDataError:
                pass
        assert decoded < stream.frames


def test_no_video_stream_files_hold_only_audio(dataset):
    out, summary = dataset
    items = fault_items(summary, "no_video_stream")
    assert len(items) == CONFIG.no_video_stream
    for item in items:
        with av.open(str(out / "videos" / f"{item}.mp4")) as container:
            assert [stream.type for stream in container.streams] == ["audio"]
            assert sum(1 for _ in container.decode(audio=0)) > 0


def test_corrupt_videos_do_not_open(dataset):
    out, summary = dataset
    items = fault_items(summary, "corrupt_videos")
    assert len(items) == CONFIG.corrupt_videos
    for item in items:
        with pytest.raises(av.error.FFmpegError):
            decode_all(out / "videos" / f"{item}.mp4")


def test_planted_bad_rows_are_where_recorded_and_are_the_only_rows_that_fail_to_parse(dataset):
    out, summary = dataset
    lines = (out / "pairs.csv").read_text().splitlines()
    assert lines[0] == "user,item,timestamp"
    planted = {row["line"]: row for row in summary["faults"]["bad_rows"]}
    assert len(planted) == CONFIG.bad_rows
    assert {row["kind"] for row in planted.values()} == set(BAD_ROW_KINDS)
    for number, line in enumerate(lines[1:], start=2):
        if number in planted:
            assert line == planted[number]["text"]
            with pytest.raises(ValueError):
                parse_pair(line)
        else:
            parse_pair(line)
    assert len(lines) - 1 == summary["counts"]["csv_data_rows"]


def test_csv_and_tsv_hold_the_same_time_ordered_sequences(dataset):
    out, summary = dataset
    bad_lines = {row["line"] for row in summary["faults"]["bad_rows"]}
    from_csv = defaultdict(list)
    with open(out / "pairs.csv", newline="") as handle:
        for number, line in enumerate(handle.read().splitlines()[1:], start=2):
            if number not in bad_lines:
                user, item, timestamp = parse_pair(line)
                from_csv[user].append((timestamp, item))
    from_tsv = {}
    for line in (out / "pairs.tsv").read_text().splitlines():
        user, items = line.split("\t")
        from_tsv[user] = items.split(" ")
    assert {user: [item for _, item in sorted(seq)] for user, seq in from_csv.items()} == from_tsv
    for seq in from_csv.values():
        timestamps = sorted(ts for ts, _ in seq)
        assert len(set(timestamps)) == len(timestamps), "a user's timestamps tie"
    assert sum(len(items) for items in from_tsv.values()) == summary["counts"]["interactions"]


def test_every_user_has_enough_distinct_interactions(dataset):
    out, _ = dataset
    for line in (out / "pairs.tsv").read_text().splitlines():
        items = line.split("\t")[1].split(" ")
        assert CONFIG.min_interactions <= len(items) <= CONFIG.max_interactions
        assert len(set(items)) == len(items)


def test_titles_cover_every_item_and_survive_csv_quoting(dataset):
    out, _ = dataset
    with open(out / "titles.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["item"] for row in rows] == [str(i) for i in range(1, CONFIG.items + 1)]
    assert all(row["title"] == catalogue.make_title(CONFIG.seed, int(row["item"])) for row in rows)


def test_categories_differ_in_pixel_statistics(dataset):
    """Each middle frame's mean colour lies nearest to its own category's mean colour."""
    out, summary = dataset
    means, labels = [], []
    for item in healthy_items(summary):
        frames = decode_all(out / "videos" / f"{item['item']}.mp4")
        means.append(frames[len(frames) // 2].to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0))
        labels.append(item["category"])
    means, labels = np.array(means), np.array(labels)
    centroids = {c: means[labels == c].mean(axis=0) for c in set(labels.tolist())}
    assert len(centroids) == CONFIG.categories
    nearest = [min(centroids, key=lambda c, m=m: np.linalg.norm(m - centroids[c])) for m in means]
    assert np.mean(np.array(nearest) == labels) >= 0.9


def test_item_ids_carry_no_category_or_popularity_order():
    config = SynthConfig(users=1, items=400)
    categories = catalogue.assign_categories(config)
    assert np.bincount(categories).tolist() == [50] * 8
    assert abs(np.corrcoef(np.arange(400), categories)[0, 1]) < 0.2
    assert abs(np.corrcoef(np.arange(400), catalogue.popularity_weights(config))[0, 1]) < 0.2


def test_popularity_is_long_tailed_and_preferences_drift():
    config = SynthConfig(users=400, items=200, seed=3)
    interactions = catalogue.generate_interactions(config, catalogue.assign_categories(config))
    counts = np.zeros(config.items + 1, dtype=int)
    for seq in interactions.sequences.values():
        for item, _ in seq:
            counts[item] += 1
    ranked = np.sort(counts[1:])[::-1]
    assert ranked[:20].sum() > 0.4 * ranked.sum()  # the top 10% of items get most interactions
    assert ranked[100:].sum() < 0.12 * ranked.sum()  # the bottom half are rare
    assert np.median(ranked) < 0.5 * ranked.mean()
    drifted = sum(p["initial"] != p["final"] for p in interactions.preferences.values())
    assert 0.2 * config.users < drifted < config.users


def test_sequences_follow_the_users_preferred_categories():
    config = SynthConfig(users=300, items=200, seed=4, drift_probability=0.0)
    categories = catalogue.assign_categories(config)
    interactions = catalogue.generate_interactions(config, categories)
    hits = total = 0
    for user, seq in interactions.sequences.items():
        preferred = set(interactions.preferences[user]["initial"])
        hits += sum(int(categories[item - 1]) in preferred for item, _ in seq)
        total += len(seq)
    assert hits / total > 0.8  # 90% on preference plus chance hits, minus exhausted categories


@pytest.mark.parametrize(
    "change",
    [
        {"items": 5, "missing_videos": 3, "truncated_videos": 3},
        {"min_interactions": 30},
        {"sizes": ((63, 64),)},
        {"sizes": ((48, 32),)},  # too narrow for libx265
        {"hevc_fraction": 1.5},
        {"seed": -1},
    ],
)
def test_inconsistent_configs_are_rejected(tmp_path, change):
    with pytest.raises(ValueError):
        generate(tmp_path / "out", dataclasses.replace(SynthConfig(users=5), **change), workers=1)


def test_cli_writes_the_dataset_and_reports_it(tmp_path, capsys):
    out = tmp_path / "cli"
    options = (
        "--users 6 --items 6 --categories 3 --seed 2 --workers 1 --min-seconds 0.5 --max-seconds 0.5 --fps 10"
    )
    options += " --sizes 48x32 --b-frames 0 --portrait-fraction 0 --rotation-fraction 0 --hevc-fraction 0"
    argv = ["--out", str(out), *options.split(), "--bad-rows", "2"]
    assert command.main(argv) == 0
    summary = json.loads((out / "synth.json").read_text(encoding="utf-8"))
    assert summary["config"]["seed"] == 2 and summary["counts"]["bad_rows"] == 2
    assert "6 users, 6 items" in capsys.readouterr().out
    for item in range(1, 7):
        frames = decode_all(out / "videos" / f"{item}.mp4")
        assert len(frames) == 5 and (frames[0].width, frames[0].height) == (48, 32)
        assert all(frame.pict_type != av.video.frame.PictureType.B for frame in frames)
    assert command.main(argv) == 2
    assert "already holds synth output" in capsys.readouterr().err


def test_cli_rejects_a_malformed_size(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        command.main(["--out", str(tmp_path), "--sizes", "64by48"])
    assert exit_.value.code == 2


def test_pixels_beat_ids_on_items_rare_in_training(tmp_path):
    """Leave-one-out HR@10, colour nearest neighbour vs ID co-occurrence: IDs win on common targets,
    pixels on targets in the bottom half of training popularity."""
    config = SynthConfig(
        users=500, items=160, seed=5, sizes=((64, 64),), fps_choices=(10,), min_seconds=0.5, max_seconds=0.5
    )
    summary = generate(tmp_path / "data", config, workers=2)
    colours = np.zeros((config.items + 1, 3))
    for item in summary["items"]:
        frames = decode_all(tmp_path / "data" / "videos" / f"{item['item']}.mp4")
        colours[int(item["item"])] = (
            frames[len(frames) // 2].to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
        )
    sequences = [
        [int(i) for i in line.split("\t")[1].split(" ")]
        for line in (tmp_path / "data" / "pairs.tsv").read_text().splitlines()
    ]
    together = np.zeros((config.items + 1, config.items + 1))
    train_count = np.zeros(config.items + 1)
    for seq in sequences:
        history = seq[:-1]
        np.add.at(train_count, history, 1)
        together[np.ix_(history, history)] += 1
    rare = train_count <= np.median(train_count[1:])
    hits = {(model, kind): 0 for model in ("pixels", "ids") for kind in ("rare", "common")}
    for seq in sequences:
        history, target = seq[:-1], seq[-1]
        kind = "rare" if rare[target] else "common"
        distance = np.linalg.norm(colours[:, None, :] - colours[None, history, :], axis=2).min(axis=1)
        scores = {"pixels": -distance, "ids": together[history].sum(axis=0) + 1e-3 * train_count}
        for name, score in scores.items():
            score[[0, *history]] = -np.inf
            hits[name, kind] += target in np.argsort(-score, kind="stable")[:10]
    assert hits["ids", "common"] > hits["pixels", "common"], hits  # the ID baseline is no straw man
    assert hits["pixels", "rare"] > 2 * hits["ids", "rare"] + 10, hits
