"""Elastic resume: a run checkpointed mid-epoch on N gloo ranks resumes on M ranks (2 -> 1, 1 -> 2)
and trains every train sample exactly once in each epoch.

- the global order (``trainer.sample_order``): the same batches on any world size and worker
  count, a stream resumed at a global batch continues it on any world size, and a failed shard
  read is counted by one reader only;
- a mid-epoch resume on another world size is refused with one line where the train shards embed
  frames and several readers split them;
- end to end: each rank is a real :class:`~trainer.trainer.Trainer` in its own process (gloo on
  CPU), resumed from the ``last.pt`` the first run wrote, as ``videorec train`` does;
  ``Trainer.on_batch`` records the ``sample_keys`` of every batch a rank reads for a step.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest
import torch.distributed as dist
from torch.utils.data import DataLoader

from dataformat.format import TRAIN_FRAMES_REFERENCE, is_metadata_member, sanitize_key
from tests.fixtures_dataset import solid_frames, write_dataset
from tests.test_trainer_bad_input import train
from trainer import checkpoint
from trainer.config import DataConfig, preset
from trainer.data import StreamPosition, TrainStream
from trainer.dataset import load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
USERS = 30  # 30 samples in batches of 4: 8 global batches an epoch, the last one of 2 samples
EPOCHS = 2


def _sequences() -> dict[str, list[str]]:
    return {str(u): [str((u * 7 + t * 3) % 17 + 1) for t in range(7)] for u in range(USERS)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """ID-only: trained with the ``id`` encoder."""
    return write_dataset(tmp_path_factory.mktemp("ds"), _sequences(), max_seq_len=4, per_shard=4)


@pytest.fixture(scope="module")
def reference_dataset(tmp_path_factory) -> Path:
    """The ``reference`` layout (train samples hold their JSON window only; frames in the item
    shards): trained with the ``tiny`` video encoder, frames read from the item store."""
    folder = tmp_path_factory.mktemp("ref") / "ds"
    write_dataset(folder, _sequences(), frames=solid_frames(10, 2), max_seq_len=4, per_shard=4)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["shards"]["train"]:
        path = folder / entry["path"]
        with tarfile.open(path) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if is_metadata_member(m.name)]
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for member, content in members:
                tar.addfile(member, io.BytesIO(content))
        data = path.read_bytes()
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    manifest["format_version"], manifest["train_frames"] = 3, TRAIN_FRAMES_REFERENCE
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def _batches(data: Path, world: int, workers: int, done: int = 0, per_step: int = 1, urls=None) -> list[dict]:
    """Every rank's batches of epoch 1 in the global order, resumed after ``done`` global batches."""
    dataset = load_dataset(str(data))
    config = DataConfig(batch_size=4, shuffle_shards=True, shuffle_buffer=8, num_workers=workers)
    batches = []
    for rank in range(world):
        stream = TrainStream(
            urls or dataset.shard_urls("train"),
            config,
            seed=5,
            max_seq_len=4,
            batches_per_epoch=-(-USERS // 4),
            with_frames=False,
            position=StreamPosition(epoch=1, batches=done),
            rank=rank,
            world_size=world,
            shard_entries=dataset.shard_entries("train"),
            global_order=True,
            batches_per_step=per_step,
        )
        batches += list(DataLoader(stream, batch_size=None, num_workers=workers))
    return batches


def _by_number(batches: list[dict]) -> dict[int, list[str]]:
    return {int(b["batch_index"]): list(b["sample_keys"]) for b in batches if b["sample_keys"]}


def test_the_global_order_is_the_same_on_any_world_size_and_worker_count(dataset):
    one = _by_number(_batches(dataset, world=1, workers=0))
    assert sorted(one) == list(range(8)) and [len(one[g]) for g in range(8)] == [4] * 7 + [2]
    assert sorted(key for keys in one.values() for key in keys) == sorted(_users())
    for world, workers in ((2, 0), (2, 2), (3, 1)):
        assert _by_number(_batches(dataset, world, workers)) == one, (world, workers)


def test_a_stream_resumed_at_a_global_batch_goes_on_with_any_world_size(dataset):
    one = _by_number(_batches(dataset, world=1, workers=0))
    for world, per_step in ((1, 1), (2, 1), (2, 2), (3, 1)):
        resumed = _batches(dataset, world, workers=0, done=3, per_step=per_step)
        assert _by_number(resumed) == {g: keys for g, keys in one.items() if g >= 3}, (world, per_step)
        # each rank yields whole steps; batch numbers past the epoch's 8 come empty
        steps = -(-5 // (world * per_step))
        assert len(resumed) == steps * per_step * world
        assert all(not b["sample_keys"] for b in resumed if b["batch_index"] >= 8)


def test_a_failed_shard_read_is_counted_by_one_reader(dataset):
    urls = [*load_dataset(str(dataset)).shard_urls("train"), str(dataset / "train" / "missing.tar")]
    batches = _batches(dataset, world=2, workers=2, urls=urls)
    assert sum(b["read_errors"] for b in batches) == 1
    assert sorted(key for b in batches for key in b["sample_keys"]) == sorted(_users())


def _users() -> set[str]:
    return {sanitize_key(str(u)) for u in range(USERS)}


def _rank(rank: int, world: int, data: str, run: str, max_steps: int | None) -> None:
    """One rank of a run (resumed when ``run`` holds ``last.pt``); writes ``seen-<world>-<rank>.json``."""
    import torch

    from trainer.trainer import Trainer

    torch.set_num_threads(1)
    if world > 1:
        store = f"file://{run}/store-{world}-{max_steps}"
        dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    dataset = load_dataset(data)
    config = preset("tiny")
    config.data.data, config.output, config.progress = data, run, False
    config.model.encoder = "tiny" if dataset.has_frames else "id"
    config.data.batch_size, config.data.num_workers, config.data.frame_size = 4, 0, 8
    config.optim.epochs, config.optim.max_steps = EPOCHS, max_steps
    config.loss.gather_negatives = True  # an idle rank must join the candidates' all-gather too
    config.eval_every_epoch = False
    config.optim.schedule = "constant"  # the same learning rates whether or not a run stops early
    last = Path(run) / "checkpoints" / checkpoint.LAST
    state = checkpoint.read(last, checkpoint.RESUME_KEYS) if last.exists() else None
    trainer = Trainer(
        config, dataset, rank=rank, world_size=world, encoder_spec=state and state["encoder_spec"]
    )
    if state:
        trainer.resume(state)
    seen = []
    trainer.on_batch = lambda batch: seen.append(
        {"epoch": trainer.position.epoch, "step": trainer.step + 1, "keys": batch["sample_keys"]}
    )
    trainer.train()
    (Path(run) / f"seen-{world}-{rank}.json").write_text(json.dumps(seen))
    if world > 1:
        dist.destroy_process_group()


def _run(world: int, data: Path, run: Path, max_steps: int | None) -> list[dict]:
    """Train on ``world`` processes; returns the batches every rank read."""
    run.mkdir(exist_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_rank, args=(rank, world, str(data), str(run), max_steps))
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(p.exitcode is None for p in processes):
        if any(p.exitcode for p in processes):  # one rank failed: the others would wait for it
            break
        time.sleep(0.1)
    for process in processes:
        if process.exitcode is None:
            process.kill()
        process.join()
    assert [p.exitcode for p in processes] == [0] * world
    return [b for rank in range(world) for b in json.loads((run / f"seen-{world}-{rank}.json").read_text())]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "first", "then", "stop_at"),
    [
        ("dataset", 2, 1, 5),  # 4 steps an epoch on 2 ranks: stops after global batch 2 of epoch 1
        ("dataset", 1, 2, 11),  # 8 steps on 1 rank: stops after batch 3 of epoch 1; 2 ranks go on
        # the video model on the reference layout; the last step of epoch 1 leaves rank 1 an idle pass
        ("reference_dataset", 1, 2, 11),
    ],
)
def test_a_run_resumed_on_another_world_size_trains_each_sample_once_per_epoch(
    request, tmp_path, data, first, then, stop_at
):
    dataset, run = request.getfixturevalue(data), tmp_path / "run"
    before = _run(first, dataset, run, max_steps=stop_at)
    assert checkpoint.load(run / "checkpoints" / checkpoint.LAST)["position"]["world_size"] == first
    after = _run(then, dataset, run, max_steps=None)

    users = _users()
    for epoch in range(EPOCHS):
        trained = Counter(key for b in before + after if b["epoch"] == epoch for key in b["keys"])
        assert set(trained) == users and set(trained.values()) == {1}, f"epoch {epoch}: {trained}"
    if then > first:  # 5 batches left on 2 ranks: rank 1's third is past the epoch, an idle pass
        assert sum(1 for b in after if not b["keys"]) == 1
    # the resumed run continues the step count
    assert min(b["step"] for b in after) == stop_at + 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == list(range(1, len(steps) + 1))  # no step lost or repeated
    assert (run / "results.json").exists()


@pytest.mark.slow
def test_a_mid_epoch_resume_on_another_world_size_is_refused_where_shards_embed_frames(tmp_path, capsys):
    sequences = {str(u): [str((u * 5 + t * 2) % 13 + 1) for t in range(7)] for u in range(16)}
    data = write_dataset(tmp_path / "ds", sequences, frames=solid_frames(10, 2), max_seq_len=4, per_shard=3)
    run = tmp_path / "run"
    flags = f"--data {data} --output {run} --preset tiny --batch-size 4 --frame-size 8 --no-progress"
    # two loader workers each read their share of the embedded shards: the split order
    status, _, err = train(capsys, *flags.split(), "--num-workers", "2", "--max-steps", "2")
    assert status == 0, err
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*torchrun, "-m", "trainer.train", *flags.split(), "--num-workers", "2"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert (
        "videorec train: error: the checkpoint stopped mid-epoch on 1 ranks, and this dataset's train "
        "shards embed frames, whose order depends on the ranks: resume on 1 ranks" in done.stderr
    ), done.stderr[-3000:]
    assert "trainer/checkpoint_manager.py" not in done.stderr  # each rank's one line, no trainer traceback


def _losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["type"] == "train"]


@pytest.mark.slow
def test_a_run_resumed_on_the_same_world_size_is_bit_exact(dataset, tmp_path):
    _run(2, dataset, tmp_path / "reference", max_steps=None)
    _run(2, dataset, tmp_path / "resumed", max_steps=5)
    _run(2, dataset, tmp_path / "resumed", max_steps=None)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "reference")
    assert len(_losses(tmp_path / "reference")) == EPOCHS * 4
