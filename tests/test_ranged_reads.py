"""Ranged reads (``ranged_reads.read_range``/``read_ranges``/``GcsRangeReader``) move only the bytes asked.

The ``gs://`` tests count bytes where they cross the wire: a byte-counting proxy sits between the
client and a real gcp-storage-emulator and records each HTTP exchange's status, header bytes and
body bytes. Objects are uploaded through the proxy too, so the media links the emulator hands out
point at it and no download can slip past the count.
"""

from __future__ import annotations

import random

import pytest

from blobstore import ranged_reads
from blobstore.gcs import gcs_client
from tests.byte_counting_proxy import CountingProxy

BUCKET = "ranged-reads"
BIG = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def big_data() -> bytes:
    return random.Random(9).randbytes(BIG)


@pytest.fixture
def proxy(gcs_emulator, monkeypatch):
    """A :class:`CountingProxy` in front of the emulator, with ``STORAGE_EMULATOR_HOST`` pointing at it."""
    counting = CountingProxy.in_front_of(gcs_emulator.host)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", counting.host)
    yield counting
    counting.close()
    assert counting.errors == []


@pytest.fixture
def big_object(proxy, big_data) -> str:
    """``gs://`` URL of a 24 MiB object of random bytes, uploaded through the proxy; counts reset after."""
    client = gcs_client()
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        bucket = client.create_bucket(BUCKET)
    bucket.blob("big.bin").upload_from_string(big_data)
    proxy.reset()
    return f"gs://{BUCKET}/big.bin"


def media(proxy: CountingProxy):
    return [e for e in proxy.exchanges() if e.media]


def object_calls(proxy: CountingProxy):
    """Metadata (and other JSON API) requests on objects: what a ranged read may add to its downloads."""
    return [e for e in proxy.exchanges() if e.object_call]


def bucket_calls(proxy: CountingProxy):
    """Requests on buckets: at most the client's one background bucket lookup per process and bucket."""
    return [e for e in proxy.exchanges() if not e.media and not e.object_call]


@pytest.mark.gcs
def test_read_range_transfers_what_it_asks(proxy, big_object, big_data):
    offset, size = 5_000_000, 75_000
    assert ranged_reads.read_range(big_object, offset, size) == big_data[offset : offset + size]
    downloads = media(proxy)
    assert len(downloads) == 1 and downloads[0].status == 206
    assert downloads[0].range == f"bytes={offset}-{offset + size - 1}"
    assert size <= downloads[0].body_bytes <= 2 * size
    assert object_calls(proxy) == [] and len(bucket_calls(proxy)) <= 1


@pytest.mark.gcs
def test_read_ranges_coalesces_nearby_ranges_and_keeps_caller_order(proxy, big_object, big_data):
    rng = random.Random(4)
    ranges = []
    for cluster_start in (100_000, 3_000_000, 20_000_000):
        offset = cluster_start
        for _ in range(15):
            size = rng.randrange(1, 40_000)
            ranges.append((offset, size))
            offset += size + rng.randrange(0, ranged_reads.COALESCE_GAP)
    ranges += [
        ranges[3],
        (ranges[7][0] + 10, 5),
        (ranges[20][0], 0),
    ]  # a repeat, a range inside another, an empty one
    rng.shuffle(ranges)

    got = ranged_reads.read_ranges(big_object, ranges)

    assert got == [big_data[offset : offset + size] for offset, size in ranges]
    plan = ranged_reads.coalesce(ranges)
    assert len(plan) == 3
    downloads = media(proxy)
    assert len(downloads) == 3 < len(ranges)
    assert sorted(e.range for e in downloads) == sorted(f"bytes={start}-{end - 1}" for start, end, _ in plan)
    asked = sum(size for _, size in ranges)
    assert sum(e.body_bytes for e in downloads) <= asked + ranged_reads.COALESCE_GAP * (
        len(ranges) - len(plan)
    )
    assert object_calls(proxy) == [] and len(bucket_calls(proxy)) <= 1


@pytest.mark.gcs
def test_ranged_download_retries_transient_errors(proxy, big_object, big_data):
    proxy.fail_next(2)
    assert ranged_reads.read_range(big_object, 1234, 5678) == big_data[1234 : 1234 + 5678]
    assert [e.status for e in proxy.exchanges()] == [503, 503, 206]


@pytest.mark.gcs
def test_ranged_reads_fail_loudly_on_missing_objects_and_short_files(proxy, big_object):
    with pytest.raises(FileNotFoundError):
        ranged_reads.read_range(f"gs://{BUCKET}/absent.bin", 0, 10)
    with pytest.raises(FileNotFoundError):
        ranged_reads.GcsRangeReader(f"gs://{BUCKET}/absent.bin")
    with pytest.raises(EOFError):
        ranged_reads.read_range(big_object, BIG - 10, 20)
    with pytest.raises(EOFError):
        ranged_reads.read_range(big_object, BIG + 100, 20)


@pytest.mark.gcs
def test_gcs_range_reader_counts_the_bytes_it_downloads(proxy, big_object, big_data):
    reader = ranged_reads.GcsRangeReader(big_object)
    assert reader.size == BIG and len(object_calls(proxy)) == 1
    rng = random.Random(2)
    for _ in range(30):
        position = rng.randrange(0, BIG)
        reader.seek(position)
        for _ in range(rng.randrange(1, 6)):
            chunk = reader.read(32 * 1024)
            assert chunk == big_data[position : position + 32 * 1024]
            position += len(chunk)
    reader.seek(-100, 2)
    assert reader.read(1000) == big_data[-100:] and reader.read(10) == b""
    downloads = media(proxy)
    assert reader.requests == len(downloads)
    assert reader.bytes_downloaded == sum(e.body_bytes for e in downloads)
    assert len(object_calls(proxy)) == 1 and len(bucket_calls(proxy)) <= 1


def test_read_ranges_local_file_order_and_coalescing(tmp_path):
    data = random.Random(1).randbytes(1_000_000)
    path = tmp_path / "shard.bin"
    path.write_bytes(data)
    ranges = [
        (900_000, 50),
        (10, 20),
        (0, 5),
        (40, 100),
        (300_000, 1000),
        (30 + ranged_reads.COALESCE_GAP, 7),
        (5, 5),
    ]

    assert ranged_reads.read_ranges(str(path), ranges) == [data[o : o + s] for o, s in ranges]
    assert ranged_reads.read_range(str(path), 123, 456) == data[123:579]
    assert ranged_reads.coalesce(ranges) == [
        (0, 30 + ranged_reads.COALESCE_GAP + 7, [2, 6, 1, 3, 5]),
        (300_000, 301_000, [4]),
        (900_000, 900_050, [0]),
    ]
    # A join stops growing at ``max_span``; a lone range larger than that is still one request.
    assert ranged_reads.coalesce([(0, 10), (10, 10), (20, 10)], max_span=20) == [
        (0, 20, [0, 1]),
        (20, 30, [2]),
    ]
    assert ranged_reads.coalesce([(0, 50)], max_span=20) == [(0, 50, [0])]
    with pytest.raises(EOFError):
        ranged_reads.read_ranges(str(path), [(999_990, 20)])
    with pytest.raises(ValueError):
        ranged_reads.coalesce([(-1, 5)])
