"""The item store (trainer/item_store.py) and its machine-wide cache of remote shards (trainer/item_cache.py).

Datasets are the hand-written ones of ``tests/fixtures_dataset.py`` (their items tables index each
item sample, as the ingest's do); remote shards are served by a real ``http.server`` behind the
byte-counting proxy, so what the cache fetches is measured on the wire.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import multiprocessing
import tarfile
import threading
from pathlib import Path

import pytest
import webdataset as wds

from dataformat import format as fmt
from tests import test_train_layout
from tests.byte_counting_proxy import CountingProxy
from tests.dataset_files import dataset_table
from tests.fixtures_dataset import solid_frames, write_dataset
from trainer.config import DataConfig
from trainer.data import StreamPosition, TrainStream
from trainer.dataset import load_dataset
from trainer.item_cache import ShardCache
from trainer.item_store import ItemLost, item_store_for, tar_members

NUM_ITEMS = 12
nightly = test_train_layout.nightly
"""Fixture: a first version and a reference-layout nightly version on one dataset root (from the
``synth16`` and ``donor_videos`` fixtures of conftest.py)."""


def _sequences() -> dict[str, list[str]]:
    return {str(u): [str((u + t) % NUM_ITEMS + 1) for t in range(7)] for u in range(24)}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """12 items of 2 frames in 3 item shards of 4 items."""
    folder = tmp_path_factory.mktemp("store") / "ds"
    return write_dataset(folder, _sequences(), frames=solid_frames(12, 2), max_seq_len=5, per_shard=4)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(dataset_dir):
    """``(dataset URL, proxy)``: the dataset over HTTP, every byte the server sends counted."""
    handler = functools.partial(QuietHandler, directory=str(dataset_dir.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = CountingProxy(("127.0.0.1", server.server_port))
    try:
        yield f"{proxy.host}/{dataset_dir.name}", proxy
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()


def _shard_frames(dataset) -> dict[int, list[bytes]]:
    """Every item's frames as stock webdataset reads them from the item shards."""
    found = {}
    for sample in wds.WebDataset(dataset.shard_urls("items"), shardshuffle=False):
        found[json.loads(sample["json"])["item_index"]] = [sample[f"{n}.jpg"] for n in range(2)]
    return found


def _shard_bytes_sent(proxy: CountingProxy) -> int:
    return sum(e.body_bytes for e in proxy.exchanges() if "/items/items-" in e.target)


def test_the_store_reads_each_items_frames_as_its_shard_holds_them(dataset_dir, tmp_path):
    dataset = load_dataset(str(dataset_dir))
    store = item_store_for(dataset, DataConfig(item_cache=str(tmp_path / "cache")))
    expected = _shard_frames(dataset)
    assert sorted(store.items().tolist()) == sorted(expected) == list(range(1, NUM_ITEMS + 1))
    for item, frames in expected.items():
        assert store.frames(item) == frames
    assert not (tmp_path / "cache").exists()  # a local dataset is read in place


def test_member_names_in_pax_records_are_read():
    out = io.BytesIO()
    long_key = "ü" + "k" * 120  # too long and not ASCII for a ustar header: a PAX record names it
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            (f"{long_key}.json", b'{"item_index": 3}'),
            (f"{long_key}.0.jpg", b"\xff\xd8jpeg"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        end = tar.offset  # the members, without the end-of-archive blocks
    members = tar_members(out.getvalue()[:end])
    assert members == [(f"{long_key}.json", b'{"item_index": 3}'), (f"{long_key}.0.jpg", b"\xff\xd8jpeg")]


def test_remote_shards_are_fetched_whole_once_checked_and_reused_by_a_later_run(
    served, dataset_dir, tmp_path
):
    url, proxy = served
    dataset = load_dataset(url)
    config = DataConfig(item_cache=str(tmp_path / "cache"))
    expected = _shard_frames(load_dataset(str(dataset_dir)))
    proxy.reset()
    first = item_store_for(dataset, config)
    for item in reversed(range(1, NUM_ITEMS + 1)):  # out of shard order: still one fetch per shard
        assert first.frames(item) == expected[item]
    shard_bytes = sum(int(entry["bytes"]) for entry in dataset.manifest["shards"]["items"])
    fetches = [e for e in proxy.exchanges() if "/items/items-" in e.target]
    assert len(fetches) == 3 and all(e.range is None for e in fetches)  # whole shards, never by item
    assert _shard_bytes_sent(proxy) == shard_bytes
    cached = sorted((tmp_path / "cache").rglob("*.tar"))
    assert len(cached) == 3 and all(str(dataset.version) in str(path) for path in cached)
    for path, entry in zip(cached, dataset.manifest["shards"]["items"], strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    first.close()

    proxy.reset()
    second = item_store_for(load_dataset(url), config)  # a later run of the same version
    assert all(second.frames(item) == expected[item] for item in expected)
    assert _shard_bytes_sent(proxy) == 0


def _read_all(url: str, cache: str) -> int:
    store = item_store_for(load_dataset(url), DataConfig(item_cache=cache))
    return sum(len(store.frames(item)) for item in range(1, NUM_ITEMS + 1))


def test_processes_sharing_a_cache_fetch_each_shard_once(served, tmp_path):
    url, proxy = served
    proxy.reset()
    with multiprocessing.get_context("fork").Pool(4) as pool:  # like 4 ranks or loader workers
        frames = pool.starmap(_read_all, [(url, str(tmp_path / "cache"))] * 4)
    assert frames == [2 * NUM_ITEMS] * 4
    dataset = load_dataset(url)
    assert _shard_bytes_sent(proxy) == sum(int(e["bytes"]) for e in dataset.manifest["shards"]["items"])
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp-" in p.name]


def test_a_fetched_shard_whose_sha256_differs_is_not_cached_and_its_items_are_lost(served, tmp_path):
    url, _ = served
    dataset = load_dataset(url)
    dataset.manifest["shards"]["items"][1]["sha256"] = "0" * 64  # the shard is not what was written
    store = item_store_for(dataset, DataConfig(item_cache=str(tmp_path / "cache")))
    with pytest.raises(ItemLost, match=r"^item 5 \(items/items-000001\.tar\): .*sha256 differs"):
        store.frames(5)
    with pytest.raises(ItemLost, match=r"^item 6 \(items/items-000001\.tar\)"):
        store.frames(6)  # not fetched again
    assert store.frames(1) and store.frames(12)  # the other shards are sound
    assert len(list((tmp_path / "cache").rglob("*.tar"))) == 2


def test_the_cache_evicts_least_recently_used_shards_no_process_holds(served, tmp_path):
    url, _ = served
    dataset = load_dataset(url)
    sizes = [int(entry["bytes"]) for entry in dataset.manifest["shards"]["items"]]
    config = DataConfig(item_cache=str(tmp_path / "cache"), item_cache_max_gb=(sizes[0] + sizes[1]) / 1e9)
    store = item_store_for(dataset, config)
    store.frames(1), store.frames(5)  # shards 0 and 1: the cache is full
    store.close()
    store.frames(5)  # shard 1 used again, and held: shard 0 is now the least recently used
    store.frames(9)  # shard 2 needs room
    cached = sorted(p.name.split(".")[0] for p in (tmp_path / "cache").rglob("*.tar"))
    assert cached == ["items-000001", "items-000002"]
    cache = ShardCache(config.item_cache, 1)  # a limit nothing fits in: the held shards stay
    cache._make_room(1, tmp_path / "nothing")
    assert len(list((tmp_path / "cache").rglob("*.tar"))) == 2
    store.close()
    cache._make_room(1, tmp_path / "nothing")
    assert not list((tmp_path / "cache").rglob("*.tar"))


def test_decoding_on_the_gpu_gets_each_unique_items_jpegs_from_the_store(dataset_dir, tmp_path):
    """``--decode-device cuda``: the loader hands over each unique item's JPEGs (decoded by nvjpeg in
    the trainer), read once per batch from the store; the CPU path decodes the same frames."""
    dataset = load_dataset(str(dataset_dir))
    store = item_store_for(dataset, DataConfig(item_cache=str(tmp_path / "cache")))
    expected = _shard_frames(dataset)
    batches = {}
    for device in ("cuda", "cpu"):
        config = DataConfig(batch_size=6, frame_size=8, shuffle_buffer=0, decode_device=device)
        stream = TrainStream(
            dataset.shard_urls("train"),
            config,
            seed=1,
            max_seq_len=5,
            batches_per_epoch=4,
            with_frames=True,
            position=StreamPosition(),
            item_store=store,
        )
        batches[device] = list(stream)
    for on_gpu, on_cpu in zip(batches["cuda"], batches["cpu"], strict=True):
        assert "frames" not in on_gpu and "jpegs" not in on_cpu
        unique = on_gpu["unique_items"].tolist()
        assert unique == on_cpu["unique_items"].tolist()
        assert on_gpu["jpegs"] == [expected[item] for item in unique]
        assert on_cpu["frames"].shape == (len(unique), 2, 3, 8, 8)


def test_a_nightly_version_reads_the_items_it_indexes_in_an_earlier_versions_shards(nightly, tmp_path):
    """A reference-layout nightly version points reused items into the first version's shards
    (``../<version>/items/...``, whose JSON holds that version's index): read in place, and over
    ``http://`` through one cached copy, they are the first version's frames."""
    first, second, new_items = nightly
    stores = {}
    for name, result in (("first", first), ("second", second)):
        dataset = load_dataset(result.output)
        stores[name] = (item_store_for(dataset, DataConfig(item_cache=str(tmp_path / "c"))), dataset)
    index = {
        name: {r["item_id"]: r["item_index"] for r in dataset_table(r_.output, "items").to_pylist()}
        for name, r_ in (("first", first), ("second", second))
    }
    second_store = stores["second"][0]
    assert len(second_store.items()) == second.manifest["num_items"]
    for item_id, item in index["second"].items():
        frames = second_store.frames(item)
        if item_id in new_items:
            assert not fmt.is_earlier_version_path(second_store.shard_name(item))
        else:
            assert fmt.is_earlier_version_path(second_store.shard_name(item))
            assert frames == stores["first"][0].frames(index["first"][item_id])

    root = Path(second.output).parents[1]
    handler = functools.partial(QuietHandler, directory=str(root.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{root.name}/versions/{Path(second.output).name}"
        remote = item_store_for(load_dataset(url), DataConfig(item_cache=str(tmp_path / "cache")))
        for item in index["second"].values():
            assert remote.frames(item) == second_store.frames(item)
    finally:
        server.shutdown()
        server.server_close()
    first_id = Path(first.output).name
    assert {p.parent.parent.name for p in (tmp_path / "cache").rglob("*.tar")} == {
        first_id,
        Path(second.output).name,
    }
