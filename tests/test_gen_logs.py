"""benchmarks/gen_logs.py writes MicroLens-shaped logs that ``videorec ingest`` reads, deterministically."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.gen_logs import LogShape, generate, generate_columns
from transforms.interactions import detect_format

REPO = Path(__file__).resolve().parents[1]
SHAPE = LogShape(rows=6_000, users=500, items=300, seed=3)


def read_rows(path: Path) -> list[tuple[int, int, int]]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["user", "item", "timestamp"]
        return [(int(u), int(i), int(t)) for u, i, t in reader]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict, list[tuple[int, int, int]]]:
    path = tmp_path_factory.mktemp("logs") / "pairs.csv"
    summary = generate(SHAPE, path)
    return path, summary, read_rows(path)


def test_shape_ids_and_header(written):
    path, summary, rows = written
    assert len(rows) == SHAPE.rows == summary["rows"]
    users = {u for u, _, _ in rows}
    items = {i for _, i, _ in rows}
    assert users == set(range(1, SHAPE.users + 1)) and summary["users"] == SHAPE.users
    assert items <= set(range(1, SHAPE.items + 1)) and summary["items"] == len(items)
    assert detect_format(str(path), path.read_bytes()[:100]) == "microlens-csv"


def test_every_user_has_the_minimum_and_activity_is_heavy_tailed(written):
    per_user = Counter(u for u, _, _ in written[2])
    counts = sorted(per_user.values())
    assert counts[0] >= SHAPE.min_per_user
    mean = SHAPE.rows / SHAPE.users
    assert counts[-1] > 3 * mean  # a log-normal tail, not an even spread
    assert counts[len(counts) // 2] < mean  # median below the mean


def test_item_popularity_is_zipf_like_and_not_ordered_by_id(written):
    per_item = Counter(i for _, i, _ in written[2])
    ranked = [count for _, count in per_item.most_common()]
    assert ranked[0] > 10 * ranked[len(ranked) // 2]
    top_ten = [item for item, _ in per_item.most_common(10)]
    assert top_ten != sorted(top_ten)


def test_repeated_pairs_and_exact_duplicates_are_present(written):
    _, summary, rows = written
    pairs = Counter((u, i) for u, i, _ in rows)
    triples = Counter(rows)
    repeats = sum(c - 1 for c in pairs.values())
    exact = sum(c - 1 for c in triples.values())
    assert exact == summary["exact_duplicates"] > 0
    assert repeats - exact > 0  # re-watches at another time, too
    assert len(pairs) == summary["distinct_pairs"]
    planted = SHAPE.rows * SHAPE.repeat_fraction
    assert 0.5 * planted < repeats and 0.2 * planted * SHAPE.exact_fraction < exact < planted


def test_rows_are_in_log_order_not_grouped_by_user(written):
    rows = written[2]
    times = [t for _, _, t in rows]
    assert times == sorted(times)
    users = [u for u, _, _ in rows]
    changes = sum(1 for a, b in zip(users, users[1:], strict=False) if a != b)
    assert changes > 0.5 * len(rows) and users != sorted(users)


def test_shuffle_order_is_not_sorted_by_time_or_user():
    user, _, timestamp = generate_columns(LogShape(rows=2_000, users=100, items=50, seed=1, order="shuffle"))
    assert list(timestamp) != sorted(timestamp) and list(user) != sorted(user)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, written):
    again = tmp_path / "again.csv"
    generate(SHAPE, again)
    assert again.read_bytes() == written[0].read_bytes()
    other = tmp_path / "other.csv"
    generate(LogShape(rows=SHAPE.rows, users=SHAPE.users, items=SHAPE.items, seed=4), other)
    assert other.read_bytes() != written[0].read_bytes()


def test_refuses_too_few_rows_for_the_minimum():
    with pytest.raises(ValueError, match="at least users x min_per_user"):
        generate_columns(LogShape(rows=99, users=20, items=5))


def test_command_line_writes_the_file(tmp_path):
    out = tmp_path / "cli.csv"
    done = subprocess.run(
        [sys.executable, "benchmarks/gen_logs.py", "--rows", "600", "--users", "100", "--items", "40"]
        + ["--seed", "1", "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "600 rows, 100 users" in done.stderr
    assert len(read_rows(out)) == 600
