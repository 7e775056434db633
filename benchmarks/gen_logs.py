"""MicroLens-shaped interaction logs at any size: ``user,item,timestamp`` CSV, fast and deterministic.

The file is what ``videorec ingest --interactions`` reads (microlens-csv: a header, then integer
user, item and timestamp columns). Its shape follows the MicroLens logs:

- exactly ``rows`` rows over user IDs ``1..users`` and item IDs ``1..items``;
- every user has at least ``min_per_user`` rows; the rows beyond that are spread over users with
  log-normal weights (``user_sigma``), so user activity is heavy-tailed;
- item popularity is Zipf-like: the item of popularity rank ``r`` is drawn with weight
  ``r ** -item_exponent``; ranks are a random permutation of the IDs, so IDs carry no popularity;
- a share ``repeat_fraction`` of the rows (never a user's first) repeats the item of one of the same
  user's earlier rows; a share ``exact_fraction`` of those repeats also copies that row's timestamp,
  making an exact duplicate (same user, item and timestamp), the rest are re-watches at a later time;
- timestamps are integer epoch seconds: each user starts at a uniform time within ``span_days`` of
  ``start_s`` and then waits a geometric number of seconds (mean ``mean_gap_s``) between rows;
- rows are in log order: sorted by timestamp, ties in random order, so users interleave as in a real
  log (``order="shuffle"``: a uniform random order instead). Never sorted by user.

Every random draw comes from one ``numpy.random.Generator`` seeded with ``seed``, in a fixed order,
so equal arguments give byte-identical files. All steps are vectorised; 10M rows take seconds.

    python benchmarks/gen_logs.py --rows 1900000 --users 200000 --items 20000 --seed 1 --output pairs.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

HEADER = b"user,item,timestamp\n"
ORDERS = ("time", "shuffle")


@dataclass(frozen=True)
class LogShape:
    """Everything that decides the generated rows. Two equal shapes give byte-identical files."""

    rows: int
    """Total rows written (after the header)."""
    users: int
    """User IDs are ``1..users``; each has at least ``min_per_user`` rows."""
    items: int
    """Item IDs are ``1..items``; an item may get no rows at all (the tail of the Zipf law)."""
    seed: int = 0
    """Root of every random draw."""
    min_per_user: int = 5
    """Fewest rows of any user (MicroLens keeps users with at least 5 interactions)."""
    user_sigma: float = 1.0
    """Log-normal sigma of the user activity weights (0: the extra rows are spread evenly)."""
    item_exponent: float = 0.9
    """Zipf exponent of item popularity (0: uniform)."""
    repeat_fraction: float = 0.05
    """Share of rows that repeat an earlier (user, item) pair of the same user."""
    exact_fraction: float = 0.5
    """Share of the repeats that also copy the earlier row's timestamp (exact duplicates)."""
    start_s: int = 1_672_531_200
    """Earliest first timestamp (epoch seconds; 2023-01-01 UTC)."""
    span_days: int = 30
    """Users start at a uniform time within this many days of ``start_s``."""
    mean_gap_s: int = 3_600
    """Mean seconds between a user's consecutive rows (geometric, at least 1)."""
    order: str = "time"
    """``time``: log order (by timestamp, ties random); ``shuffle``: uniform random order."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        if self.users < 1 or self.items < 1 or self.min_per_user < 1:
            raise ValueError("users, items and min_per_user must be at least 1")
        if self.rows < self.users * self.min_per_user:
            raise ValueError(
                f"rows ({self.rows}) must be at least users x min_per_user "
                f"({self.users} x {self.min_per_user} = {self.users * self.min_per_user})"
            )
        if self.seed < 0 or self.user_sigma < 0 or self.item_exponent < 0 or self.mean_gap_s < 1:
            raise ValueError("seed, user_sigma and item_exponent must not be negative, mean_gap_s >= 1")
        if not (0 <= self.repeat_fraction <= 1 and 0 <= self.exact_fraction <= 1):
            raise ValueError("repeat_fraction and exact_fraction must be in [0, 1]")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")


def rows_per_user(shape: LogShape, rng: np.random.Generator) -> np.ndarray:
    """Rows of each user (index = user ID - 1): ``min_per_user`` plus a log-normal share of the rest."""
    weights = rng.lognormal(0.0, shape.user_sigma, shape.users) if shape.user_sigma else np.ones(shape.users)
    extra = rng.multinomial(shape.rows - shape.users * shape.min_per_user, weights / weights.sum())
    return extra + shape.min_per_user


def zipf_items(shape: LogShape, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` item IDs (1-based) drawn with Zipf-like weights over a random permutation of the IDs."""
    ranks = np.arange(1, shape.items + 1, dtype=np.float64)
    cdf = np.cumsum(ranks**-shape.item_exponent)
    by_rank = rng.permutation(shape.items) + 1
    draws = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
    return by_rank[np.minimum(draws, shape.items - 1)]


def follow_to_root(source: np.ndarray) -> np.ndarray:
    """Resolve chains ``j -> source[j] -> ...`` to the first row that is its own source.

    ``source[j] <= j`` for every row, so the chains end; each pass halves their length.
    """
    root = source.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def generate_columns(shape: LogShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, item, timestamp)`` int64 arrays of ``shape.rows`` rows, in the file's row order."""
    shape.validate()
    rng = np.random.default_rng(shape.seed)
    counts = rows_per_user(shape, rng)
    # Rows grouped by user for now; user IDs are a random permutation so activity is not ordered by ID.
    user_ids = rng.permutation(shape.users) + 1
    user = np.repeat(user_ids, counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)  # index of each row's user's first row
    position = np.arange(shape.rows) - first

    item = zipf_items(shape, rng, shape.rows)
    gaps = rng.geometric(1.0 / shape.mean_gap_s, shape.rows)
    gaps[position == 0] = 0
    walked = np.cumsum(gaps)
    starts = shape.start_s + rng.integers(0, shape.span_days * 86_400, shape.users)
    timestamp = np.repeat(starts, counts) + walked - walked[first]

    # Repeats: row j takes the (root) item of an earlier row of the same user; exact ones its time too.
    repeat = (rng.random(shape.rows) < shape.repeat_fraction) & (position > 0)
    exact = repeat & (rng.random(shape.rows) < shape.exact_fraction)
    earlier = first + np.floor(rng.random(shape.rows) * position).astype(np.int64)
    source = np.where(repeat, earlier, np.arange(shape.rows))
    item = item[follow_to_root(source)]
    timestamp = timestamp[follow_to_root(np.where(exact, earlier, np.arange(shape.rows)))]

    if shape.order == "time":
        # Timestamps fit in 32 bits until 2106; the low 31 bits break ties at random.
        tie = rng.integers(0, 2**31, shape.rows)
        order = np.argsort((timestamp << 31) | tie, kind="stable")
    else:
        order = rng.permutation(shape.rows)
    return user[order], item[order], timestamp[order]


def write_csv(path: str | Path, user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> None:
    """Write the three columns as ``user,item,timestamp`` CSV with that header line."""
    table = pa.table({"user": user, "item": item, "timestamp": timestamp})
    with open(path, "wb") as handle:
        handle.write(HEADER)
        pacsv.write_csv(table, handle, write_options=pacsv.WriteOptions(include_header=False))


def generate(shape: LogShape, path: str | Path) -> dict:
    """Write the log for ``shape`` to ``path``; returns its row, user, item and duplicate counts."""
    user, item, timestamp = generate_columns(shape)
    write_csv(path, user, item, timestamp)
    pairs = user * (shape.items + 1) + item
    by_pair = np.argsort(pairs, kind="stable")
    pairs = pairs[by_pair]
    new_pair = np.concatenate([[True], pairs[1:] != pairs[:-1]])
    offset = (timestamp - timestamp.min())[by_pair]
    # (pair rank, time offset) as one int64: ranks < rows and offsets < 2**32 fit for any rows < 2**31.
    triples = distinct_count((np.cumsum(new_pair) - 1) * (int(offset.max()) + 1) + offset)
    return {
        "rows": int(user.size),
        "users": int(np.count_nonzero(np.bincount(user))),
        "items": int(np.count_nonzero(np.bincount(item))),
        "distinct_pairs": int(new_pair.sum()),
        "exact_duplicates": int(user.size - triples),
    }


def distinct_count(values: np.ndarray) -> int:
    """Number of distinct values (by sorting: NumPy's hash-based ``unique`` is slower at this size)."""
    ordered = np.sort(values)
    return int(ordered.size and 1 + np.count_nonzero(ordered[1:] != ordered[:-1]))


def main(argv: list[str] | None = None) -> int:
    defaults = LogShape(rows=0, users=1, items=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--min-per-user", type=int, default=defaults.min_per_user)
    parser.add_argument("--user-sigma", type=float, default=defaults.user_sigma)
    parser.add_argument("--item-exponent", type=float, default=defaults.item_exponent)
    parser.add_argument("--repeat-fraction", type=float, default=defaults.repeat_fraction)
    parser.add_argument("--exact-fraction", type=float, default=defaults.exact_fraction)
    parser.add_argument("--order", choices=ORDERS, default=defaults.order)
    args = parser.parse_args(argv)
    shape = LogShape(
        rows=args.rows,
        users=args.users,
        items=args.items,
        seed=args.seed,
        min_per_user=args.min_per_user,
        user_sigma=args.user_sigma,
        item_exponent=args.item_exponent,
        repeat_fraction=args.repeat_fraction,
        exact_fraction=args.exact_fraction,
        order=args.order,
    )
    started = time.perf_counter()
    try:
        summary = generate(shape, args.output)
    except ValueError as err:
        print(f"gen_logs: error: {err}", file=sys.stderr)
        return 2
    print(
        f"gen_logs: wrote {args.output}: {summary['rows']} rows, {summary['users']} users, "
        f"{summary['items']} items, {summary['distinct_pairs']} distinct (user, item) pairs, "
        f"{summary['exact_duplicates']} exact duplicates in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
