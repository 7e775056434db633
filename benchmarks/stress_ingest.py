"""Stress harness for issue 9's lost rows: the 2M-row ID-only ingest, run repeatedly on a loaded machine.

While ``--hogs`` busy-loop processes and a second Beam job (a ``--side-rows`` ingest into another
folder, in a loop) run alongside, the main ingest (``python -m pipeline.main --interactions CSV
--output DIR --quiet``, DirectRunner, ``--workers`` processes) runs ``--repeats`` times on the same
MicroLens-shaped log (``benchmarks/gen_logs.py``: by default issue 9's 1.9M rows, 200k users, 20k
items). Each run reports its wall time, whether the manifest's counts reconcile, the counts, and, when
users are missing, which ones: the expected users are computed from the CSV itself with the ingest's
documented rules (exact duplicates removed, at least ``--min-user-interactions`` rows left; every
item is kept at the default ``--min-item-interactions 1``) and compared with the user IDs found in the
sequences table(s) and in the train shards, so a loss can be placed before or after the step that
writes them. Side-job runs are checked the same way (reconciliation only).

``--ref REF`` runs a git worktree of REF instead of the working tree (the same one bench_scale.py
uses). Exits 1 if any main or side run lost rows or failed, 0 otherwise.

    nice -n 19 .venv/bin/python benchmarks/stress_ingest.py [--repeats 5] [--ref eaf93fa] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.bench_scale import Code, ensure_worktree, ingest  # noqa: E402
from benchmarks.gen_logs import LogShape, generate  # noqa: E402


def expected_users(csv_path: Path, min_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(user IDs the ingest must keep in ID order, the same in order of first appearance in the file,
    rows it must use)`` for an all-integer user,item,timestamp CSV: exact duplicate rows removed, then
    users with at least ``min_rows`` rows left.

    The first-appearance order matters because the DirectRunner hands a GroupByKey's keys to its
    workers round-robin in the order it first received them.
    """
    table = pacsv.read_csv(csv_path)
    triples = np.stack([table.column(name).to_numpy() for name in ("user", "item", "timestamp")])
    unique = np.unique(triples, axis=1)
    users, counts = np.unique(unique[0], return_counts=True)
    kept = users[counts >= min_rows]
    seen, first_row = np.unique(triples[0], return_index=True)
    by_first_row = seen[np.argsort(first_row)]
    return kept, by_first_row[np.isin(by_first_row, kept)], int(counts[counts >= min_rows].sum())


def sequence_table_users(output: Path) -> np.ndarray | None:
    """User IDs (as int) in the sequences table under ``output``: every Parquet file with a path part
    starting ``sequences`` (``sequences.parquet``, ``tables/sequences/part-*.parquet``...), outside
    ``_work``; None when there is none."""
    files = sorted(
        path
        for path in output.rglob("*.parquet")
        if "_work" not in path.relative_to(output).parts
        and any(part.startswith("sequences") for part in path.relative_to(output).parts)
    )
    if not files:
        return None
    columns = [pq.read_table(f, columns=["user_id"]).column(0).to_numpy() for f in files]
    return np.concatenate(columns).astype(np.int64)


def train_shard_users(output: Path) -> np.ndarray | None:
    """User IDs (as int) of the samples in the train shards under ``output`` (their ``{key}.json``
    members); None when there are no train shards."""
    shards = sorted((output / "train").glob("*.tar*")) if (output / "train").is_dir() else []  # .tar.gz too
    if not shards:
        return None
    users = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            users += [int(name[: -len(".json")]) for name in tar.getnames() if name.endswith(".json")]
    return np.array(users, dtype=np.int64)


def describe_missing(expected: np.ndarray, found: np.ndarray | None) -> dict | None:
    """Which of the ``expected`` users ``found`` lacks: how many, where they fall in the order of
    ``expected`` (ranks), how dense the loss is in that range, and rank/ID parity."""
    if found is None:
        return None
    missing_mask = ~np.isin(expected, found)
    ranks = np.flatnonzero(missing_mask)
    extra = np.setdiff1d(found, expected)
    duplicated = int(found.size - np.unique(found).size)
    summary = {"missing": int(ranks.size), "unexpected": int(extra.size), "duplicated": duplicated}
    if ranks.size:
        first, last = int(ranks[0]), int(ranks[-1])
        span = last - first + 1
        summary.update(
            first_missing_rank=first,
            last_missing_rank=last,
            rank_range_fraction=[round(first / expected.size, 4), round((last + 1) / expected.size, 4)],
            density_in_range=round(ranks.size / span, 4),
            missing_even_rank=int(np.count_nonzero(ranks % 2 == 0)),
            missing_odd_rank=int(np.count_nonzero(ranks % 2 == 1)),
            missing_even_id=int(np.count_nonzero(expected[ranks] % 2 == 0)),
            missing_odd_id=int(np.count_nonzero(expected[ranks] % 2 == 1)),
            first_missing_ids=[int(u) for u in expected[ranks[:10]]],
        )
    return summary


class Load:
    """CPU hogs (busy-loop processes) and a second Beam job in a loop, until :meth:`stop`."""

    def __init__(self, hogs: int, side_csv: Path | None, code: Code, scratch: Path, workers: int):
        self.hog_processes = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)
        ]
        self.side_runs: list[dict] = []
        self._stop = threading.Event()
        self._side_job = None
        if side_csv is not None:
            args = (side_csv, code, scratch, workers)
            self._side_job = threading.Thread(target=self._side_loop, args=args, daemon=True)
            self._side_job.start()

    def _side_loop(self, csv_path: Path, code: Code, scratch: Path, workers: int) -> None:
        number = 0
        while not self._stop.is_set():
            run = ingest(
                code, [f"--interactions={csv_path}"], scratch / "side" / f"run-{number % 2}", workers, 1.0
            )
            run["number"] = number
            self.side_runs.append(run)
            number += 1

    def stop(self) -> None:
        """Stop the hogs now and let the side job finish its current run."""
        for process in self.hog_processes:
            process.terminate()
            process.wait()
        self._stop.set()
        if self._side_job is not None:
            self._side_job.join()


def check_run(
    run: dict, expected: np.ndarray, first_seen: np.ndarray, expected_rows: int, output: Path
) -> dict:
    """Add to ``run`` the comparison of its outputs with the expected users (placed in ID order, which
    is user-index order, and in order of first appearance in the file); ``lost`` says whether rows or
    users went missing (or the run failed)."""
    counts = run.get("counts")
    in_sequences, in_train = sequence_table_users(output), train_shard_users(output)
    run["expected_users"] = int(expected.size)
    run["expected_rows_used"] = expected_rows
    run["sequences_missing"] = describe_missing(expected, in_sequences)
    run["sequences_missing_by_first_seen"] = describe_missing(first_seen, in_sequences)
    run["train_missing"] = describe_missing(expected, in_train)
    counted_ok = counts is not None and (
        counts["users_kept"] == expected.size and counts["rows_used"] == expected_rows
    )
    missing = run["sequences_missing"]
    run["lost"] = not (run["reconciled"] and counted_ok and missing is not None and missing["missing"] == 0)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_900_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hogs", type=int, default=2, help="busy-loop processes alongside")
    parser.add_argument("--side-rows", type=int, default=200_000, help="rows of the second job (0: none)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--min-user-interactions", type=int, default=5, help="the ingest's setting (default 5)"
    )
    parser.add_argument(
        "--ref", default=None, help="run a git worktree of this ref instead of the working tree"
    )
    parser.add_argument("--worktree", type=Path, default=Path("/tmp/videorec-baseline"))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/videorec-stress"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    args.scratch.mkdir(parents=True, exist_ok=True)
    code = ensure_worktree(args.ref, args.worktree) if args.ref else Code("project", REPO)
    main_csv = args.scratch / f"pairs-{args.rows}r-{args.users}u-{args.items}i-s{args.seed}.csv"
    if not main_csv.exists():
        generate(LogShape(rows=args.rows, users=args.users, items=args.items, seed=args.seed), main_csv)
    side_csv = None
    if args.side_rows:
        side_users = max(1, round(args.side_rows * args.users / args.rows))
        side_csv = args.scratch / f"side-{args.side_rows}r-s{args.seed + 1}.csv"
        if not side_csv.exists():
            shape = LogShape(rows=args.side_rows, users=side_users, items=args.items, seed=args.seed + 1)
            generate(shape, side_csv)
    expected, first_seen, expected_rows = expected_users(main_csv, max(args.min_user_interactions, 3))
    print(f"stress: {code.label}; expected {expected.size} users kept, {expected_rows} rows used", flush=True)

    results = {"code": code.label, "csv": str(main_csv), "runs": [], "side_runs": []}
    load = Load(args.hogs, side_csv, code, args.scratch, args.workers)
    try:
        for number in range(args.repeats):
            output = args.scratch / f"main-{number}"
            run = ingest(code, [f"--interactions={main_csv}"], output, args.workers, 0.5)
            run = check_run(run, expected, first_seen, expected_rows, output)
            run["number"] = number
            results["runs"].append(run)
            missing = run["sequences_missing"]
            print(
                f"run {number}: {'LOST' if run['lost'] else 'ok'}; wall {run['wall_s']:.0f} s; reconciled "
                f"{run['reconciled']}; counts {json.dumps(run['counts'])}; error {run['error']}; "
                f"sequences missing {json.dumps(missing)}; in order of first appearance "
                f"{json.dumps(run['sequences_missing_by_first_seen'])}; train missing "
                f"{json.dumps(run['train_missing'])}",
                flush=True,
            )
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    finally:
        load.stop()
    results["side_runs"] = load.side_runs
    for side in load.side_runs:
        print(
            f"side run {side['number']}: reconciled {side['reconciled']}; wall {side['wall_s']:.0f} s; "
            f"error {side['error']}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    lost = [r["number"] for r in results["runs"] if r["lost"]]
    side_failed = [s["number"] for s in load.side_runs if not s["reconciled"]]
    print(
        f"stress: {len(lost)} of {args.repeats} main runs lost rows {lost}; side runs failed: {side_failed}"
    )
    return 1 if lost or side_failed else 0


if __name__ == "__main__":
    sys.exit(main())
