"""Dense indices by hash buckets and prefix sums, and the compact per-item side inputs."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli import main as videorec
from tests.dataset_files import dataset_table
from transforms.buckets import (
    RankInBuckets,
    WriteInParts,
    bucket_count,
    bucket_of,
    id_order_key,
    prefix_by_bucket,
    shard_ranges,
    stable_hash,
)
from transforms.item_lookup import (
    CollectExcludedItems,
    ExcludedItems,
    HashCollisionError,
    ItemLookup,
    placed_items_array,
)


def test_hash_is_stable_across_processes_and_spreads_ids():
    # Pinned: dense indices (and so every shard) depend on it; a change here is a format change.
    assert stable_hash("user-1") == 0x88E1EA21865AAC9A
    buckets = [bucket_of(str(i), 16) for i in range(16_000)]
    counts = np.bincount(buckets, minlength=16)
    assert counts.min() > 800 and counts.max() < 1200


def test_bucket_count_follows_both_shard_limits():
    assert bucket_count(0, 0, 1000, 10**9) == 1
    assert bucket_count(8000, 0, 1000, 10**9) == 10  # 800 per bucket
    assert bucket_count(10, 8 * 10**9, 1000, 10**9) == 10  # bytes decide
    assert prefix_by_bucket([(3, 5), (0, 2), (7, 1)]) == {0: 0, 3: 2, 7: 7}
    with pytest.raises(ValueError, match="twice"):
        prefix_by_bucket([(1, 1), (1, 2)])
    assert shard_ranges([0, 3], 5) == [(0, 3), (3, 5)] and shard_ranges([], 0) == []


def test_ranks_cover_every_element_once_in_a_worker_independent_order():
    ids = [str(i) for i in range(500)] + ["a", "b", "-4"]
    buckets = 7
    with BeamTestPipeline(runner="FnApiRunner") as p:
        ranked = (
            p
            | beam.Create(ids)
            | beam.Map(lambda i: (bucket_of(i, buckets), i))
            | RankInBuckets(id_order_key)
            | beam.FlatMap(lambda ranked: [(ranked[1] + k, i) for k, i in enumerate(ranked[2])])
        )
        expected_order = sorted(ids, key=lambda i: (bucket_of(i, buckets), id_order_key(i)))
        assert_that(ranked, equal_to(list(enumerate(expected_order))))


def test_batched_ranks_equal_unbatched_ranks():
    ids = [str(i) for i in range(300)] + ["x", "y"]
    buckets = 5

    def batches(chunk):
        by_bucket = {}
        for i in chunk:
            by_bucket.setdefault(bucket_of(i, buckets), []).append(i)
        return [(b, tuple(v)) for b, v in by_bucket.items()]

    with BeamTestPipeline(runner="FnApiRunner") as p:
        chunks = p | beam.Create([ids[k : k + 37] for k in range(0, len(ids), 37)])
        ranked = (
            chunks
            | beam.FlatMap(batches)
            | RankInBuckets(id_order_key, batched=True)
            | beam.FlatMap(lambda ranked: [(ranked[1] + k, i) for k, i in enumerate(ranked[2])])
        )
        expected_order = sorted(ids, key=lambda i: (bucket_of(i, buckets), id_order_key(i)))
        assert_that(ranked, equal_to(list(enumerate(expected_order))))


def test_excluded_items_and_lookup_answer_by_id():
    combine = CollectExcludedItems()
    accumulators = [
        combine.add_input(combine.create_accumulator(), ("x", "corrupt")),
        combine.add_input(
            combine.add_input(combine.create_accumulator(), ("y", "not_found")), ("z", "corrupt")
        ),
    ]
    excluded = combine.extract_output(combine.merge_accumulators(accumulators))
    assert isinstance(excluded, ExcludedItems) and len(excluded) == 3
    assert excluded["x"] == "corrupt" and excluded.reason("y") == "not_found" and "w" not in excluded
    with pytest.raises(KeyError):
        excluded["w"]

    lookup = ItemLookup.from_parts(
        [
            placed_items_array([("a", 1, 0, 0, 3072, (100, 200)), ("b", 2, None, 0, 0, ())]),
            placed_items_array([("c", 3, 1, 512, 2048, (5, 6, 7))]),
        ]
    )
    assert lookup.item_indices("abc") == [1, 2, 3]
    assert lookup.frames_of("a") == (0, 0, 3072, (100, 200))
    assert lookup.frames_of("b") == (None, 0, 0, ())
    assert lookup.frames_of("c") == (1, 512, 2048, (5, 6, 7))
    with pytest.raises(KeyError, match="not in the catalogue"):
        lookup.item_indices(["x"])
    assert lookup.check_disjoint(excluded) is lookup


def test_a_hash_collision_is_an_error_never_a_silent_merge():
    part = placed_items_array([("a", 1, None, 0, 0, ())])
    with pytest.raises(HashCollisionError):
        ItemLookup.from_parts([part, part.copy()])  # the same hash twice stands for two IDs sharing it
    combine = CollectExcludedItems()
    excluded = combine.extract_output(combine.add_input(combine.create_accumulator(), ("a", "corrupt")))
    with pytest.raises(HashCollisionError, match="excluded"):
        ItemLookup.from_parts([part]).check_disjoint(excluded)


ODD_IDS = ["--5", "-", "--", "-5", "5", "-0", "0", "007", "-x", "+3", "5-", "٣", "a"]


def test_id_order_key_takes_every_id_numbers_first():
    """Any string is an ID: ``--5`` or ``-`` are not numbers and must not crash the ordering (issue 21)."""
    ordered = sorted(ODD_IDS, key=id_order_key)
    numbers = [i for i in ordered if id_order_key(i)[0] == 0]
    assert numbers == ["-5", "-0", "0", "5", "007"]
    assert [int(i) for i in numbers] == sorted(int(i) for i in numbers)
    assert ordered[len(numbers) :] == sorted(i for i in ODD_IDS if i not in numbers)


def test_an_ingest_with_ids_like_double_dash_five_succeeds(tmp_path):
    """The whole ID-only job on users and items named ``--5``, ``-``, ``-x``: ranked, sharded, listed."""
    users = ["--5", "-", "-7", "u1", "--", "٣"]
    items = ["--9", "-", "-1", "i2", "+3"]
    lines = ["user,item,timestamp"]
    for u, user in enumerate(users):
        for t in range(5):
            lines.append(f"{user},{items[(u + t) % len(items)]},{100 + t}")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["ingest", "--interactions", str(tmp_path / "pairs.csv"), "--output", str(out)]
    assert videorec([*argv, "--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["users_kept"] == manifest["num_users"] == len(users)
    assert manifest["counts"]["items_encoded"] == manifest["num_items"] == len(items)
    table = dataset_table(out, "items").to_pydict()
    assert sorted(table["item_id"]) == sorted(items)


def test_write_in_parts_hands_every_record_to_one_part_of_ceil_n_over_per_part():
    records = [{"id": f"r{i}", "n": i} for i in range(45)]

    def summary(part, entries):
        return part, sorted(e[1] for e in entries)

    with BeamTestPipeline() as p:
        parts = (
            p
            | beam.Create(records)
            | WriteInParts(
                20, key_of=lambda e: e[0], write_part=summary, as_entry=lambda r: (r["id"], r["n"])
            )
        )
        expected = {}
        for record in records:
            expected.setdefault(bucket_of(record["id"], 3), []).append(record["n"])
        assert_that(parts, equal_to([(part, sorted(ns)) for part, ns in expected.items()]))
