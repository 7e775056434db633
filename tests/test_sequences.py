"""Histories, filtering, leave-one-out and shard cutting: plain functions, then the Beam transforms."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.buckets import bucket_of, id_order_key
from transforms.item_filter import items_of_eligible_user
from transforms.packed_rows import (
    Interaction,
    batch_histories,
    batch_item_ids,
    frame_users,
    pack_row,
    pack_user_rows,
    unpack_user_rows,
)
from transforms.sequences import (
    BuildUserSequences,
    GroupIntoHistories,
    UserSequence,
    batch_sequences,
    build_sequence,
    dedupe_history,
    effective_min_length,
    pack_sequence,
    sequence_user_id,
    train_window,
    users_in_batch,
)
from transforms.tar_shards import cut_shards, member_size, sample_size


def row(item, ts, line, user="u", column=0, file_index=0):
    return Interaction(user, item, ts, file_index, line, column)


def test_ties_keep_file_order_and_exact_duplicates_keep_the_first():
    rows = [row("b", 5, 3), row("a", 5, 2), row("c", 1, 9), row("a", 5, 7), row("d", 5, 1, file_index=1)]
    unique, duplicates = dedupe_history(rows)
    assert [r.item_id for r in unique] == ["c", "a", "b", "d"]
    assert duplicates == [row("a", 5, 7)]


def test_excluded_items_are_removed_before_the_length_check():
    history = [row(i, t, t) for t, i in enumerate("abcdef")]
    sequence, failures = build_sequence("u", history, {"b": "corrupt"}, 5)
    assert sequence == UserSequence("u", tuple("acdef"), (0, 2, 3, 4, 5))
    assert [(f["reason"], f["item_id"]) for f in failures] == [("item_corrupt", "b")]

    sequence, failures = build_sequence("u", history, {"b": "corrupt", "c": "not_found"}, 5)
    assert sequence is None
    reasons = sorted(f["reason"] for f in failures)
    assert reasons == [
        "item_corrupt",
        "item_not_found",
        "too_few_interactions",
        *["user_too_few_interactions"] * 4,
    ]
    assert [f["kind"] for f in failures].count("user") == 1


def test_leave_one_out_window_is_the_last_training_items():
    sequence = UserSequence("u", tuple("abcdefgh"), tuple(range(8)))
    assert train_window(sequence, 3) == (tuple("cdef"), (2, 3, 4, 5))
    assert train_window(sequence, 10) == (tuple("abcdef"), tuple(range(6)))
    assert effective_min_length(1) == 3 and effective_min_length(5) == 5


def test_eligible_users_name_the_items_to_decode():
    items = list("abca")
    assert items_of_eligible_user(items, {}, 4) == ["a", "b", "c"]
    assert items_of_eligible_user(items, {"c": "too_few_interactions"}, 4) == []


@pytest.mark.parametrize("seed", range(40))
def test_eligibility_on_item_ids_agrees_with_the_sequence_builder(seed):
    import random

    import numpy as np

    from transforms.buckets import stable_hash
    from transforms.item_lookup import ExcludedItems
    from transforms.new_items import NEW_ITEM

    rnd = random.Random(seed)
    catalogue = [f"i{n}" for n in range(8)]
    history = [row(rnd.choice(catalogue), t, t) for t in range(rnd.randint(0, 9))]
    excluded = {item: "corrupt" for item in rnd.sample(catalogue, rnd.randint(0, 3))}
    new_ids = rnd.sample(catalogue, rnd.randint(0, 3))
    hashes = np.array(sorted(stable_hash(i) for i in new_ids), dtype=np.uint64)
    new = ExcludedItems(hashes, np.zeros(len(hashes), np.uint8), (NEW_ITEM,)) if rnd.random() < 0.7 else None
    min_length = rnd.randint(3, 5)
    sequence, _ = build_sequence("u", history, excluded, min_length, new_items=new)
    named = items_of_eligible_user([r.item_id for r in history], excluded, min_length, new)
    assert bool(named) == (sequence is not None)
    if sequence is not None:
        assert set(sequence.item_ids) <= set(named)


def test_ids_order_integers_numerically_before_other_ids():
    assert sorted(["10", "x", "9", "-3", "100", "a"], key=id_order_key) == ["-3", "9", "10", "100", "a", "x"]


def test_shards_are_cut_by_count_and_by_bytes():
    assert cut_shards([10] * 7, max_samples=3, max_bytes=10**6) == [0, 3, 6]
    assert cut_shards([600, 600, 600], max_samples=100, max_bytes=2000) == [0, 1, 2]
    assert cut_shards([600, 600, 600], max_samples=100, max_bytes=2300) == [0, 2]  # end marker counted
    assert cut_shards([5000, 10], max_samples=100, max_bytes=1000) == [
        0,
        1,
    ]  # an oversized sample stands alone


def test_member_sizes_are_exact_tar_sizes():
    assert member_size("a.json", 1) == 1024
    assert member_size("a.json", 512) == 1024
    assert member_size("x" * 150 + ".jpg", 10) > 1024  # long names need a PAX header
    assert sample_size([("a.json", 1), ("a.0.jpg", 513)]) == 1024 + 1536


def test_user_rows_blobs_round_trip_and_split_users_by_bucket():
    by_user = {
        f"u{n}": [pack_row(row("a", n, n, user=f"u{n}")), pack_row(row("b", n, n + 1, user=f"u{n}"))]
        for n in range(50)
    }
    blobs = pack_user_rows(by_user, 4)
    assert len(blobs) == 4
    seen = {}
    for bucket, blob in blobs.items():
        for user_id, packed in unpack_user_rows(blob):
            assert bucket_of(user_id, 4) == bucket
            seen[user_id] = packed
    assert seen == {user: b"".join(rows) for user, rows in by_user.items()}
    assert pack_user_rows(by_user, 4) == blobs  # deterministic


def test_batches_read_back_without_building_rows():
    by_user = {
        "u2": [pack_row(row("x", 1, 1, user="u2"))],
        "u1": [pack_row(row("é", 2, 2, user="u1")), pack_row(row("y", 3, 3, user="u1"))],
    }
    batch = (0, frame_users(by_user))
    assert list(batch_item_ids(batch[1])) == ["é", "y", "x"]
    assert [(u, [r.item_id for r in rows]) for u, rows in batch_histories(batch)] == [
        ("u1", ["é", "y"]),
        ("u2", ["x"]),
    ]
    assert users_in_batch(batch) == 2
    sequences = [UserSequence("ü", ("a", "b", "c"), (1, 2, 3)), UserSequence("u", ("d",) * 3, (4, 5, 6))]
    packed = tuple(pack_sequence(s) for s in sequences)
    assert list(batch_sequences(packed)) == sequences
    assert [sequence_user_id(p) for p in packed] == ["ü", "u"]


def test_beam_histories_and_sequences():
    rows = [row(i, t, t, user=u) for u in ("u1", "u2") for t, i in enumerate("abcde")]
    rows.append(row("a", 0, 99, user="u1"))  # exact duplicate of u1's first row
    rows += [row("z", 1, 50, user="u3")]
    with BeamTestPipeline(runner="FnApiRunner") as p:
        # one blob per row, as if every row came from its own split: the shuffle must regroup them
        blobs = [item for r in rows for item in pack_user_rows({r.user_id: [pack_row(r)]}, 2).items()]
        packed = p | beam.Create(blobs)
        grouped = packed | GroupIntoHistories(["log"])
        excluded = p | "Excluded" >> beam.Create([("e", "corrupt")])
        built = grouped.histories | BuildUserSequences(excluded, 4, ["log"])
        assert_that(
            grouped.histories | beam.FlatMap(lambda batch: [u for u, _ in batch_histories(batch)]),
            equal_to(["u1", "u2", "u3"]),
            label="OneHistoryPerUser",
        )
        assert_that(
            built.sequences | beam.FlatMap(batch_sequences),
            equal_to([UserSequence(u, tuple("abcd"), (0, 1, 2, 3)) for u in ("u1", "u2")]),
            label="Sequences",
        )
        assert_that(
            grouped.failed | beam.Map(lambda f: (f["reason"], f["row"])),
            equal_to([("duplicate", 99)]),
            label="Dups",
        )
        assert_that(
            built.failed | beam.Map(lambda f: (f["kind"], f["reason"])),
            equal_to(
                [("row", "item_corrupt")] * 2
                + [("row", "user_too_few_interactions"), ("user", "too_few_interactions")]
            ),
            label="Dropped",
        )


@pytest.mark.parametrize("bad", [0, -1])
def test_cut_rejects_bad_limits(bad):
    with pytest.raises(ValueError):
        cut_shards([1], bad, 10)


@pytest.mark.parametrize(
    "name",
    ["a.json", "k.12.0.jpg", "x" * 95 + ".json", "x" * 96 + ".jpg0", "x" * 101, "é.json", "_e9.0.jpg"],
)
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 10**6])
def test_member_size_shortcut_equals_the_written_header(name, size):
    from transforms.tar_shards import block_padded, member_header

    assert member_size(name, size) == len(member_header(name, size)) + block_padded(size)


def test_fast_ustar_headers_are_tarfiles_bytes():
    import random
    import string

    from transforms.tar_shards import _tarfile_header, member_header

    rnd = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "._-/"
    for _ in range(3000):
        name = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 100)))
        size = rnd.choice([0, 1, 511, 512, 513, rnd.randrange(8**11)])
        assert member_header(name, size) == _tarfile_header(name, size), (name, size)
    # names the fast path does not take still go through tarfile: long, non-ASCII, huge
    for name, size in (("x" * 101, 5), ("é.json", 5), ("a.json", 8**11)):
        assert member_header(name, size) == _tarfile_header(name, size)
        assert len(member_header(name, size)) > 512
