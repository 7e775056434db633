"""The training stream: local, HTTP and GCS shards, node/worker splits, resume position, corrupt data."""

from __future__ import annotations

import functools
import http.server
import io
import json
import tarfile
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from blobstore import retries
from blobstore.gcs import open_blob_at
from tests.fixtures_dataset import solid_frames, write_dataset
from trainer.config import DataConfig
from trainer.data import ItemStream, StreamPosition, TrainStream, expand_shard_urls
from trainer.dataset import load_dataset
from trainer.frames import FrameTransform
from trainer.item_store import item_store_for

NUM_USERS = 24


def _sequences() -> dict[str, list[str]]:
    # user u's window is unique: it starts with the item "100+u"
    return {str(u): [str(100 + u), str(u % 5 + 1), str(u % 7 + 1), "50", "51"] for u in range(NUM_USERS)}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return write_dataset(
        tmp_path_factory.mktemp("ds"), _sequences(), frames=solid_frames(12, 2), max_seq_len=4, per_shard=5
    )


def _stream(
    urls, *, batch_size=4, batches=None, shuffle=False, position=None, rank=0, world=1, frames=True, **order
):
    config = DataConfig(
        batch_size=batch_size, shuffle_shards=shuffle, shuffle_buffer=8 if shuffle else 0, frame_size=8
    )
    return TrainStream(
        urls,
        config,
        seed=3,
        max_seq_len=4,
        batches_per_epoch=batches or NUM_USERS // batch_size,
        with_frames=frames,
        position=position or StreamPosition(),
        rank=rank,
        world_size=world,
        **order,
    )


def _first_items(batches) -> list[int]:
    return [int(row[0]) for batch in batches for row in batch["items"]]


def _users(batches, dataset) -> set[int]:
    first = {
        int(seq[0]): row for row, seq in enumerate(dataset.sequences.sequence(r) for r in range(NUM_USERS))
    }
    return {first[i] for i in _first_items(batches)}


def test_one_epoch_reads_every_user_once_with_frames(dataset_dir):
    dataset = load_dataset(str(dataset_dir))
    batches = list(_stream(dataset.shard_urls("train"), shuffle=True))
    assert len(batches) == NUM_USERS // 4
    assert _users(batches, dataset) == set(range(NUM_USERS))
    batch = batches[0]
    assert batch["frames"].dtype == torch.uint8
    assert batch["frames"].shape == (len(batch["unique_items"]), 2, 3, 8, 8)
    assert batch["items"].shape == (4, 5)


@pytest.mark.parametrize("global_order", [False, True])
def test_ranks_and_workers_split_the_users(dataset_dir, global_order):
    dataset = load_dataset(str(dataset_dir))
    seen = []
    for rank in range(2):
        stream = _stream(
            dataset.shard_urls("train"),
            batch_size=2,
            batches=NUM_USERS // 2,  # global batches: 6 per rank
            rank=rank,
            world=2,
            frames=False,
            global_order=global_order,
        )
        loader = DataLoader(stream, batch_size=None, num_workers=2)
        seen.append(_users(list(loader), dataset))
    assert seen[0].isdisjoint(seen[1])
    if global_order:  # one order cut into batches: every user exactly once
        assert seen[0] | seen[1] == set(range(NUM_USERS))
    else:  # each rank reads all but its last partial batches
        assert len(seen[0]) + len(seen[1]) >= NUM_USERS - 8


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_continues_the_same_order(dataset_dir, workers):
    urls = load_dataset(str(dataset_dir)).shard_urls("train")
    position = StreamPosition(epoch=1, num_workers=workers)
    full = list(
        DataLoader(
            _stream(urls, shuffle=True, position=position, frames=False), batch_size=None, num_workers=workers
        )
    )
    resumed_at = StreamPosition(epoch=1, batches=3, num_workers=workers)
    tail = list(
        DataLoader(
            _stream(urls, shuffle=True, position=resumed_at, frames=False),
            batch_size=None,
            num_workers=workers,
        )
    )
    assert [b["batch_index"] for b in tail] == [3, 4, 5]
    assert [b["items"].tolist() for b in tail] == [b["items"].tolist() for b in full[3:]]


def test_epochs_reshuffle(dataset_dir):
    urls = load_dataset(str(dataset_dir)).shard_urls("train")
    first = _first_items(_stream(urls, shuffle=True, position=StreamPosition(epoch=0), frames=False))
    second = _first_items(_stream(urls, shuffle=True, position=StreamPosition(epoch=1), frames=False))
    assert sorted(first) == sorted(second) and first != second


def test_brace_patterns_expand():
    assert expand_shard_urls("gs://b/train-{000000..000002}.tar") == [
        "gs://b/train-000000.tar",
        "gs://b/train-000001.tar",
        "gs://b/train-000002.tar",
    ]


def _rewrite_member(tar_path: Path, member_suffix: str, data: bytes) -> None:
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    target = next(m.name for m, _ in members if m.name.endswith(member_suffix))
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, content in members:
            content = data if member.name == target else content
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


def test_corrupt_samples_are_skipped_and_counted(tmp_path, caplog):
    folder = write_dataset(
        tmp_path / "ds", _sequences(), frames=solid_frames(12, 2), max_seq_len=4, per_shard=5
    )
    _rewrite_member(folder / "train/train-000000.tar", ".json", b"{not json")
    _rewrite_member(folder / "train/train-000001.tar", ".0.jpg", b"\xff\xd8 definitely not a jpeg")
    dataset = load_dataset(str(folder))
    batches = list(_stream(dataset.shard_urls("train"), batch_size=4))
    assert sum(b["skipped"] for b in batches) == 2
    assert sum(len(b["items"]) for b in batches) == NUM_USERS - 2
    assert "skipping corrupt train sample" in caplog.text


def test_latest_is_resolved_once_to_a_version(tmp_path):
    write_dataset(tmp_path / "root/versions/v2", _sequences(), max_seq_len=4, version="v2")
    (tmp_path / "root/LATEST").write_text("v2\n")
    dataset = load_dataset(str(tmp_path / "root"))
    assert dataset.version == "v2"
    assert dataset.root == str(tmp_path / "root/versions/v2")
    assert not dataset.has_frames


def _read_everything(base_url: str) -> None:
    dataset = load_dataset(base_url)
    assert dataset.root == base_url
    assert dataset.shard_urls("train")[0].startswith(base_url)
    batches = list(_stream(dataset.shard_urls("train"), shuffle=True))
    assert _users(batches, dataset) == set(range(NUM_USERS))
    with tempfile.TemporaryDirectory() as cache:  # remote item shards are fetched into the item cache
        store = item_store_for(dataset, DataConfig(item_cache=cache))
        batches = list(ItemStream(store, FrameTransform(8), 16))
    indices = torch.cat([batch["indices"] for batch in batches])
    assert sorted(indices.tolist()) == list(range(1, dataset.num_items + 1))
    assert sum(len(batch["lost_items"]) + len(batch["failed"]) for batch in batches) == 0


def test_reads_shards_over_http(dataset_dir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(dataset_dir.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _read_everything(f"http://127.0.0.1:{server.server_port}/{dataset_dir.name}")
    finally:
        server.shutdown()
        server.server_close()


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves a folder with HTTP Range support; a tar shard's first request answers 503, its second
    breaks off halfway through the body, later ones succeed (``always_fail``: shards that never do)."""

    root: Path
    always_fail: tuple[str, ...] = ()
    requests: list[tuple[str, str, int]]  # (path, Range header, status)

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self._answer(404)
            return
        data = path.read_bytes()
        seen = sum(1 for p, _, _ in self.requests if p == self.path)
        flaky = self.path.endswith(".tar")
        if self.path.endswith(self.always_fail) or (flaky and seen == 0):
            self._answer(503)
            return
        start = int(self.headers.get("Range", "bytes=0-")[len("bytes=") :].rstrip("-"))
        status = 206 if start else 200
        self.requests.append((self.path, self.headers.get("Range", ""), status))
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if flaky and seen == 1:  # break off halfway: the client sees a short body
            self.wfile.write(data[start : start + (len(data) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def _answer(self, status: int) -> None:
        self.requests.append((self.path, self.headers.get("Range", ""), status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _flaky_server(root: Path, always_fail: tuple[str, ...] = ()):
    handler = type("Handler", (FlakyHandler,), {"root": root, "always_fail": always_fail, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler.requests


def test_shard_reads_are_retried_and_resumed_at_the_byte_they_reached(dataset_dir, monkeypatch):
    monkeypatch.setattr(retries, "BACKOFF_S", 0.01)
    server, requests = _flaky_server(dataset_dir.parent)
    try:
        base = f"http://127.0.0.1:{server.server_port}/{dataset_dir.name}"
        _read_everything(base)
    finally:
        server.shutdown()
        server.server_close()
    shard = f"/{dataset_dir.name}/train/train-000000.tar"
    statuses = [(status, bool(ranged)) for path, ranged, status in requests if path == shard]
    assert statuses[:3] == [(503, False), (200, False), (206, True)]  # refused, broken off, resumed


def test_a_shard_that_keeps_failing_is_counted_as_a_failed_read(dataset_dir, monkeypatch):
    monkeypatch.setattr(retries, "BACKOFF_S", 0.01)
    monkeypatch.setattr(retries, "RETRIES", 2)
    server, requests = _flaky_server(dataset_dir.parent, always_fail=("train-000001.tar",))
    try:
        dataset = load_dataset(f"http://127.0.0.1:{server.server_port}/{dataset_dir.name}")
        batches = list(_stream(dataset.shard_urls("train"), batch_size=4, batches=4, frames=False))
    finally:
        server.shutdown()
        server.server_close()
    assert sum(b["read_errors"] for b in batches) >= 1
    assert sum(1 for path, _, _ in requests if path.endswith("train-000001.tar")) >= 3  # 1 + 2 retries


@pytest.mark.gcs
def test_reads_shards_from_gcs(dataset_dir, gcs_emulator):
    bucket = gcs_emulator.make_bucket("videorec-train")
    for path in dataset_dir.rglob("*"):
        if path.is_file():
            bucket.blob(f"datasets/ds/{path.relative_to(dataset_dir)}").upload_from_filename(str(path))
    bucket.blob("datasets/LATEST").upload_from_string(b"ds")
    manifest = json.loads(bucket.blob("datasets/ds/manifest.json").download_as_bytes())
    assert manifest["num_users"] == NUM_USERS
    _read_everything("gs://videorec-train/datasets/ds")
    # a broken GCS read resumes with a ranged read at the byte it reached
    tar = (dataset_dir / "train/train-000000.tar").read_bytes()
    tail, size = open_blob_at("gs://videorec-train/datasets/ds/train/train-000000.tar", 1000)
    with tail:
        assert tail.read() == tar[1000:] and size == len(tar)
    # a root holding LATEST also resolves over GCS (the layout is ROOT/versions/<id>)
    bucket.blob("root/LATEST").upload_from_string(b"v9")
    bucket.blob("root/versions/v9/manifest.json").upload_from_filename(str(dataset_dir / "manifest.json"))
    from trainer.dataset import resolve_manifest_url

    assert (
        resolve_manifest_url("gs://videorec-train/root")
        == "gs://videorec-train/root/versions/v9/manifest.json"
    )


def test_sequence_windows_make_every_training_item_a_target_once():
    from trainer.dataset import UserSequences
    from trainer.sequence_windows import SequenceWindowStream, training_windows

    sequences = UserSequences(
        user_index=np.array([0, 1]),
        offsets=np.array([0, 9, 12]),
        items=np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 5, 6]),
    )
    windows = training_windows(sequences, max_seq_len=3)
    # user 0 trains on 1..7 (8 is validation, 9 test): windows from the end overlap by one item
    assert [w.tolist() for w in windows] == [[4, 5, 6, 7], [1, 2, 3, 4]]
    targets = [t for w in windows for t in w[1:].tolist()]
    assert sorted(targets) == [2, 3, 4, 5, 6, 7]  # user 1 (4, 5, 6) has a 1-item history: no window

    many = [np.array([i, i + 1]) for i in range(1, 21)]
    full = list(
        SequenceWindowStream(
            many,
            batch_size=3,
            seed=1,
            shuffle=True,
            max_seq_len=3,
            batches_per_epoch=6,
            position=StreamPosition(epoch=2),
        )
    )
    tail = list(
        SequenceWindowStream(
            many,
            batch_size=3,
            seed=1,
            shuffle=True,
            max_seq_len=3,
            batches_per_epoch=6,
            position=StreamPosition(epoch=2, batches=4),
        )
    )
    assert [b["items"].tolist() for b in tail] == [b["items"].tolist() for b in full[4:]]
    assert len({int(row[0]) for b in full for row in b["items"]}) == 18


@pytest.mark.parametrize(
    ("height", "width", "size", "squash", "train"),
    [
        (16, 16, 16, False, True),  # stored at the training size: used whole, flip only
        (16, 24, 16, False, True),  # shorter side within [S, S*8/7]: a crop without resizing
        (48, 64, 16, False, True),  # larger: downscaled to S*8/7, random crop
        (48, 64, 16, False, False),  # evaluation: centre crop
        (12, 20, 16, False, False),  # smaller than S: upscaled
        (48, 64, 16, True, True),  # squash
    ],
)
def test_fused_decode_matches_the_tensor_transform(height, width, size, squash, train):
    from PIL import Image

    from trainer.frames import decode_frames, sample_generator

    y, x = np.mgrid[0:height, 0:width]
    frames = [
        np.stack([x * 4 + t, y * 5, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8) for t in range(3)
    ]
    jpegs = []
    for frame in frames:
        out = io.BytesIO()
        Image.fromarray(frame).save(out, format="JPEG", quality=100)
        jpegs.append(out.getvalue())
    transform = FrameTransform(size, squash=squash, train=train)
    for seed in range(4):
        fused = decode_frames(jpegs, transform, sample_generator(seed, 0, "k"))
        decoded = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])
        reference = transform(torch.from_numpy(decoded).permute(0, 3, 1, 2), sample_generator(seed, 0, "k"))
        assert fused.shape == reference.shape == (3, 3, size, size) and fused.is_contiguous()
        difference = (fused.int() - reference.int()).abs()
        if transform.resized(width, height) == (width, height):
            assert torch.equal(fused, reference)  # a pure crop (and flip): identical
        else:  # Pillow's and torchvision's antialiased bilinear resampling agree to rounding
            assert difference.float().mean() < 1.0 and difference.max() <= 8
