"""Bytes per user of a ``reference`` sequence shard at full-MicroLens ID widths (docs/SCALE.md).

Writes ``--users`` train samples with the ingest's own writer (``sample_json`` into a gzip-compressed
``TarShardWriter``, as ``WriteUserShards`` does) and prints the shard's bytes per user, for the
``reference`` JSON and, as the baseline, the same samples with format 2's JSON (item IDs and
timestamps too) in the same compressed tar. Widths: user IDs and indices up to 34.5M, item IDs and
indices up to 1.14M, millisecond timestamps drawn over three years, windows of 11 items (``max_seq_len`` 10) for 90 % of
users and 2-10 for the rest.

    .venv/bin/python benchmarks/sequence_shard_bytes.py [--users 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataformat.format import metadata_member, sanitize_key  # noqa: E402
from transforms.tar_shards import TarShardWriter  # noqa: E402
from transforms.train_shards import TrainSample, sample_json  # noqa: E402

USERS, ITEMS = 34_500_000, 1_140_000


def samples(count: int, seed: int) -> list[TrainSample]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        length = 11 if rng.random() < 0.9 else rng.randint(2, 10)
        indices = tuple(rng.randint(1, ITEMS) for _ in range(length))
        times = tuple(sorted(rng.randint(1_600_000_000_000, 1_700_000_000_000) for _ in range(length)))
        user = rng.randint(1, USERS)
        out.append(TrainSample(str(user), user - 1, tuple(str(i) for i in indices), indices, times))
    return out


def shard_bytes(folder: str, name: str, batch: list[TrainSample], embed_frames: bool) -> int:
    with TarShardWriter(folder, name, compress=True) as shard:
        for sample in batch:
            shard.add(metadata_member(sanitize_key(sample.user_id)), sample_json(sample, embed_frames))
            shard.end_sample()
    return shard.info.bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000, help="samples to write")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    batch = samples(args.users, args.seed)
    with tempfile.TemporaryDirectory(prefix="sequence_shard_bytes_") as folder:
        reference = shard_bytes(folder, "reference.tar.gz", batch, embed_frames=False)
        format_2 = shard_bytes(folder, "format2.tar.gz", batch, embed_frames=True)
    print(f"reference JSON: {reference / args.users:.1f} bytes per user ({reference:,} for {args.users:,})")
    print(f"format 2 JSON (baseline): {format_2 / args.users:.1f} bytes per user ({format_2:,})")
    print(
        f"full MicroLens, {USERS:,} users: {reference * USERS / args.users / 1e9:.2f} GB of sequence shards"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
