"""GPU check: what end-to-end training costs per encoder and freezing policy, and whether the loader keeps up.

For every encoder in ``--encoders`` and every policy in ``--policies`` (``frozen``: only the
projection and SASRec train, the cost of frozen features computed on the fly; ``top-k``: the
top ``--trainable-blocks`` blocks; ``all``: full fine-tuning), one ``Trainer`` (the real
optimizer step: AdamW groups, bf16 autocast on CUDA, clipping, in-batch softmax with logQ)
runs ``--steps`` timed steps on batches of ``--batch-size`` users with ``L+1`` items of
``--frames`` frames at ``--frame-size`` px, and the script reports:

- optimizer-step time, samples/s and peak GPU memory (``torch.cuda.max_memory_allocated``);
- the frames/s the step consumes, against what one loader core decodes (the trainer's
  stream, ``num_workers=0``, over JPEG train shards written here), hence loader cores needed;
- JPEG decode frames/s of item-store reads (``trainer.item_store``, an item shard written here):
  the CPU path (one core) against nvjpeg (``--decode-device cuda``). Without CUDA one line on stderr
  says nvjpeg was not timed.

It writes one Markdown table (``--out``, also printed) and a JSON (``--json``). On a machine
without CUDA it still runs (CPU steps, AMP off); GPU columns then read "n/a (cpu)". CI runs
it that way with ``--variant tiny`` (narrow versions of each architecture) and tiny sizes.

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check.md --json gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --variant tiny --frame-size 32 --steps 1   # CPU smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import webdataset as wds  # noqa: E402
from PIL import Image  # noqa: E402

from trainer.config import DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: E402
from trainer.data import StreamPosition, TrainStream  # noqa: E402
from trainer.dataset import DatasetInfo, UserSequences  # noqa: E402
from trainer.frames import FrameTransform, decode_clip_on_device, decode_frames  # noqa: E402
from trainer.item_cache import ShardCache  # noqa: E402
from trainer.item_store import NO_SHARD, ItemStore  # noqa: E402
from trainer.models.encoder_registry import ENCODERS  # noqa: E402
from trainer.trainer import Trainer  # noqa: E402

POLICIES = ("frozen", "top-k", "all")


def write_shards(
    folder: Path, users: int, items: int, window: int, frames: int, size: int
) -> tuple[list[str], ItemStore]:
    """Train shards in the dataset format (one sample per user: JSON window + each item's JPEG frames),
    and the item store over an item shard of the same JPEGs."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    jpegs = {}
    for item in range(1, items + 1):  # smooth pictures, so JPEG sizes are realistic
        base = rng.integers(0, 256, 3)
        frames_of_item = []
        for t in range(frames):
            picture = (base + np.stack([x, y, x + y + 4 * t], axis=-1) * 255 // (2 * size)) % 256
            out = io.BytesIO()
            Image.fromarray(picture.astype(np.uint8)).save(out, format="JPEG", quality=90)
            frames_of_item.append(out.getvalue())
        jpegs[item] = frames_of_item
    urls, per_shard = [], 64
    for shard, start in enumerate(range(0, users, per_shard)):
        path = folder / f"train-{shard:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for user in range(start, min(users, start + per_shard)):
                watched = [int(i) for i in rng.integers(1, items + 1, window)]
                sample = {"__key__": f"u{user}", "json": json.dumps({"item_indices": watched}).encode()}
                for item in dict.fromkeys(watched):
                    for t, data in enumerate(jpegs[item]):
                        sample[f"{item}.{t}.jpg"] = data
                writer.write(sample)
        urls.append(str(path))
    return urls, write_item_store(folder, jpegs)


def write_item_store(folder: Path, jpegs: dict[int, list[bytes]]) -> ItemStore:
    """One item shard (per item: JSON + frames ``N.jpg``) and the item store indexing it."""
    path = folder / "items-000000.tar"
    with wds.TarWriter(str(path)) as writer:
        for item, frames in jpegs.items():
            sample = {"__key__": f"i{item}", "json": json.dumps({"item_index": item}).encode()}
            writer.write({**sample, **{f"{t}.jpg": data for t, data in enumerate(frames)}})
    shard_of = np.full(max(jpegs) + 1, NO_SHARD, dtype=np.int32)
    offsets, sizes = np.zeros(len(shard_of), np.int64), np.zeros(len(shard_of), np.int64)
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            item = int(member.name.split(".")[0][1:])
            end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if shard_of[item] == NO_SHARD:
                shard_of[item], offsets[item] = 0, member.offset
            sizes[item] = end - offsets[item]
    entries = {path.name: {"path": path.name, "bytes": path.stat().st_size}}
    cache = ShardCache(str(folder / "cache"), 0)  # local: read in place
    return ItemStore(str(folder), "gpu-check", entries, [path.name], shard_of, offsets, sizes, cache)


def in_memory_dataset(
    urls: list[str], users: int, items: int, frames: int, window: int, size: int
) -> DatasetInfo:
    """The few facts a Trainer needs about a dataset, for the shards written by :func:`write_shards`."""
    manifest = {
        "format_version": 2,  # frames embedded in the train samples; no items table (evaluation is not run)
        "tables": {"items": []},
        "dataset_version": "gpu-check",
        "num_items": items,
        "has_frames": True,
        "sampler": {"num_frames": frames, "size": [size, size]},
        "max_seq_len": window - 1,
        "shards": {"train": [{"path": url, "samples": users // len(urls)} for url in urls]},
    }
    popularity = np.ones(items + 1, dtype=np.int64)
    popularity[0] = 0
    sequences = UserSequences(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
    return DatasetInfo(
        root="/", manifest=manifest, popularity=popularity, sequence_parts=[], _sequences=sequences
    )


def loader_rate(urls: list[str], batch_size: int, frame_size: int, window: int, batches: int) -> dict:
    """The trainer's stream on one core: frames/s, and the batches it made (reused by the steps)."""
    config = DataConfig(batch_size=batch_size, frame_size=frame_size, shuffle_buffer=0)
    stream = TrainStream(
        urls,
        config,
        seed=0,
        max_seq_len=window - 1,
        batches_per_epoch=batches,
        with_frames=True,
        position=StreamPosition(),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start, frames, cached = time.perf_counter(), 0, []
    for batch in stream:
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]
        cached.append(batch)
    elapsed = time.perf_counter() - start
    torch.set_num_threads(threads)
    return {"frames_per_s": frames / elapsed, "batches": len(cached)}, cached


def decode_rates(store: ItemStore, frame_size: int, device: torch.device, clips: int = 64) -> dict:
    """JPEG -> uint8 clip frames/s of ``clips`` items read from ``store``: the CPU path on one core,
    and nvjpeg on ``device`` when CUDA (else one line on stderr says it was not timed)."""
    items = [store.frames(int(item)) for item in store.items()[:clips]]
    frames = sum(len(jpegs) for jpegs in items)
    transform = FrameTransform(frame_size, train=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    for jpegs in items:
        decode_frames(jpegs, transform)
    cpu = frames / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    rates = {"source": "item store", "cpu_one_core_frames_per_s": cpu, "nvjpeg_frames_per_s": None}
    if device.type != "cuda":
        print(
            f"gpu_check: no CUDA device ({device}): nvjpeg decoding of item-store reads not timed",
            file=sys.stderr,
        )
    else:
        for jpegs in items[:4]:  # warm-up: nvjpeg handles, kernels
            transform(decode_clip_on_device(jpegs, str(device)))
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for jpegs in items:
            transform(decode_clip_on_device(jpegs, str(device)))
        torch.cuda.synchronize(device)
        rates["nvjpeg_frames_per_s"] = frames / (time.perf_counter() - start)
    return rates


def step_cost(
    dataset: DatasetInfo,
    encoder: str,
    policy: str,
    batches: list[dict],
    args: argparse.Namespace,
    device: torch.device,
) -> dict:
    """Step time, samples/s, frames/s consumed and peak GPU memory of one encoder x policy."""
    config = TrainConfig(
        data=DataConfig(batch_size=args.batch_size, frame_size=args.frame_size),
        model=ModelConfig(
            encoder=encoder,
            freeze=policy,
            trainable_blocks=args.trainable_blocks,
            allow_random_backbone=True,  # speed and memory do not depend on the weights
            dim=args.dim,
            ffn_dim=4 * args.dim,
            max_seq_len=args.window - 1,
        ),
        optim=OptimConfig(amp=True),
        loss=LossConfig(),
        output=tempfile.mkdtemp(prefix="gpu-check-"),
        progress=False,
    )
    spec = None
    if args.variant == "tiny":  # the registry's narrow variant of the same architecture, built from its spec
        spec = {"name": encoder, "num_frames": args.frames, "frame_size": args.frame_size, "variant": "tiny"}
    trainer = Trainer(config, dataset, device=device, encoder_spec=spec)
    moved = [
        {k: v.pin_memory() if device.type == "cuda" and torch.is_tensor(v) else v for k, v in b.items()}
        for b in batches
    ]
    for batch in moved[: args.warmup]:
        trainer.train_step([batch])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, samples, frames = [], 0, 0
    for i in range(args.steps):
        batch = moved[(args.warmup + i) % len(moved)]
        start = time.perf_counter()
        trainer.train_step([batch])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        samples += len(batch["items"])
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]
    total = sum(times)
    trainable = sum(p.numel() for p in trainer.model.encoder_parameters())
    return {
        "step_s": statistics.median(times),
        "samples_per_s": samples / total,
        "frames_per_s": frames / total,
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "encoder_trainable_parameters": trainable,
        "amp": trainer.autocast,
    }


def _number(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a (cpu)" if value is None else f"{value:,.{digits}f}{unit}"


def table(results: dict) -> str:
    """The Markdown report."""
    loader = results["loader"]["frames_per_s"]
    lines = [
        f"device: {results['device']}; variant {results['variant']}; d={results['dim']}; "
        f"batch {results['batch_size']} users x "
        f"{results['window']} items x {results['frames']} frames at {results['frame_size']} px; "
        f"{results['steps']} timed steps after {results['warmup']} warm-up",
        "",
        "| encoder | policy | trainable encoder params | step (s) | samples/s | frames/s consumed | peak GPU memory | "
        "loader cores needed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["steps_by_encoder"]:
        lines.append(
            f"| {row['encoder']} | {row['policy']} | {row['encoder_trainable_parameters']:,} | {row['step_s']:.3f} | "
            f"{row['samples_per_s']:.1f} | {row['frames_per_s']:,.0f} | "
            f"{_number(row['peak_gpu_mib'], 0, ' MiB')} | {row['frames_per_s'] / loader:.2f} |"
        )
    decode = results["decode"]
    lines += [
        "",
        f"loader (trainer stream, one core): {loader:,.0f} frames/s; "
        f"JPEG decode + crop of item-store reads, CPU one core: {decode['cpu_one_core_frames_per_s']:,.0f} frames/s; "
        f"nvjpeg: {_number(decode['nvjpeg_frames_per_s'], 0, ' frames/s')}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--encoders", default=",".join(sorted(ENCODERS)), help="comma-separated registry names"
    )
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated freezing policies")
    parser.add_argument("--trainable-blocks", type=int, default=1, help="blocks that train under top-k")
    parser.add_argument("--variant", choices=["full", "tiny"], default="full", help="tiny: narrow nets (CI)")
    parser.add_argument("--batch-size", type=int, default=32, help="users per step")
    parser.add_argument("--dim", type=int, default=512, help="model width d (SASRec FFN: 4 d)")
    parser.add_argument("--window", type=int, default=11, help="items per user window (L+1)")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--items", type=int, default=2000, help="distinct items in the shards written here")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per encoder x policy")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the Markdown table here")
    parser.add_argument("--json", help="write all figures here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batches_needed = args.warmup + args.steps
    users = args.batch_size * batches_needed
    with tempfile.TemporaryDirectory() as scratch:
        urls, store = write_shards(
            Path(scratch), users, args.items, args.window, args.frames, args.frame_size
        )
        dataset = in_memory_dataset(urls, users, args.items, args.frames, args.window, args.frame_size)
        loader, batches = loader_rate(urls, args.batch_size, args.frame_size, args.window, batches_needed)
        results = {
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"cpu x{os.cpu_count()}",
            "variant": args.variant,
            "batch_size": args.batch_size,
            "dim": args.dim,
            "window": args.window,
            "frames": args.frames,
            "frame_size": args.frame_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "loader": loader,
            "decode": decode_rates(store, args.frame_size, device),
            "steps_by_encoder": [],
        }
        for encoder in filter(None, args.encoders.split(",")):
            for policy in filter(None, args.policies.split(",")):
                cost = step_cost(dataset, encoder, policy, batches, args, device)
                results["steps_by_encoder"].append({"encoder": encoder, "policy": policy, **cost})
                print(f"{encoder} {policy}: {cost['step_s']:.3f} s/step", file=sys.stderr, flush=True)
    report = table(results)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
