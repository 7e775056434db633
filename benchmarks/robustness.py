"""Does the paper's comparison hold across synth configurations? synth -> ingest -> experiment, three times.

Runs ``videorec synth`` (10 % of the items planted as new: released late, same categories),
``videorec ingest --new-items 0.1`` and ``videorec experiment`` (popularity, ``id``, ``frozen``,
end to end with the top block / the whole encoder trainable, and the oracle of the planted
preferences) on each configuration below, all with the generator's default signal (8 categories,
Zipf popularity exponent 2, drift 0.1, off-preference 0.1) and the ``tiny`` preset as it stands,
then writes one Markdown table of HR@10 per configuration, arm and user subset (all / warm / rare
/ new), each arm's share of the oracle's HR@10 on all users and its training time, followed by
the issue's checks per configuration:

- end-to-end video (``full-tiny``, the whole encoder trains) HR@10 on all users >= 1.3x ``id``'s;
- on the ``new`` subset, end-to-end video HR@10 >= 3x ``id``'s and >= 2x popularity's (a baseline
  at 0 is reported as such: the check then holds for any video HR@10 above 0),

and what the planted signal allows (:func:`ceilings`: a perfect category reader without
popularity, and one with it, against the popularity arm and the oracle).

Configurations (none is the README's seed 1 / 300 users / 120 items / 32 px):

| name | seed | users | items (new) | ingest frame size |
|---|---|---|---|---|
| ``s7-u400-i120-32px`` | 7 | 400 | 120 (12) | 32 |
| ``s11-u600-i200-64px`` | 11 | 600 | 200 (20) | 64 |
| ``s23-u1000-i300-48px`` | 23 | 1,000 | 300 (30) | 48 |

Every step is skipped when its output is already there (synth.json, manifest.json; the
experiment skips its complete arms), so a killed run resumes. Each step runs in its own process
with ``OMP_NUM_THREADS`` set to ``--threads`` (default 1: on a shared 2-core machine one torch
thread per process trains the tiny nets about 4x faster than two threads contending with other
jobs; it changes speed, not results beyond float summation order).

Usage: ``.venv/bin/python benchmarks/robustness.py [--out DIR] [--configs NAME ...]
[--preset tiny] [--threads 1] [--markdown FILE] [--train-args "..."]``. Figures in
docs/TRAINING.md ("Robustness across configurations").
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from trainer.dataset import load_dataset
from trainer.evaluate import evaluation_cases


@dataclass(frozen=True)
class Config:
    seed: int
    users: int
    items: int
    frame_size: int

    @property
    def name(self) -> str:
        return f"s{self.seed}-u{self.users}-i{self.items}-{self.frame_size}px"

    @property
    def new_items(self) -> int:
        return self.items // 10


CONFIGS = {c.name: c for c in (Config(7, 400, 120, 32), Config(11, 600, 200, 64), Config(23, 1000, 300, 48))}
VIDEO = "full-tiny"
"""The end-to-end arm the checks are made on: the whole encoder trains (the README's video model)."""
ARMS = ("popularity", "id", "frozen-tiny", "topk-tiny", "full-tiny", "oracle")
SUBSETS = ("all", "warm", "rare", "new")
CLI = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


def videorec(args: list[str], threads: int) -> float:
    """Run ``videorec ARGS`` in its own process; its wall seconds (raises on failure)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, *args], check=True, env=env)
    return time.perf_counter() - started


def run_config(config: Config, root: Path, preset: str, threads: int, train_args: str) -> dict:
    """synth -> ingest -> experiment for one configuration (each step skipped when done)."""
    raw, data, exp = root / "raw", root / "data", root / "exp"
    timings = {}
    if not (raw / "synth.json").exists():
        timings["synth_s"] = videorec(
            [
                "synth",
                "--output",
                str(raw),
                "--overwrite",
                "--users",
                str(config.users),
                "--items",
                str(config.items),
                "--new-items",
                str(config.new_items),
                "--seed",
                str(config.seed),
            ],
            threads,
        )
    if not (data / "manifest.json").exists():
        timings["ingest_s"] = videorec(
            [
                "ingest",
                "--interactions",
                str(raw / "pairs.csv"),
                "--videos",
                str(raw / "videos"),
                "--titles",
                str(raw / "titles.csv"),
                "--output",
                str(data),
                "--overwrite",
                "--frame-size",
                str(config.frame_size),
                "--new-items",
                "0.1",
                "--quiet",
            ],
            threads,
        )
    command = ["experiment", "--data", str(data), "--output", str(exp), "--preset", preset]
    command += ["--allow-random-backbone"]  # the tiny encoder has no pretrained weights
    if train_args:
        command += ["--train-args", train_args]
    timings["experiment_s"] = videorec(command, threads)
    with open(exp / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    counts = json.loads((data / "manifest.json").read_text())["counts"]
    bounds = ceilings(data, raw / "synth.json")
    return {"config": config.name, "rows": rows, "counts": counts, "ceilings": bounds, **timings}


def ceilings(data: Path, synth: Path, recent: int = 5) -> dict[str, float]:
    """Test HR@10 of two idealised rankings, which show how the planted signal splits between what
    pixels carry (an item's category) and what they do not (its popularity):

    - ``category``: a perfect reader of categories without popularity: items score by how many of the
      user's last ``recent`` history items share their planted category, in random order within a
      score (the expected HR@10 over that order);
    - ``category x popularity``: ``log(that count + 0.3) + log(training popularity + 1)``.

    History items are masked, as in every arm's evaluation; ties are broken at random (expected value).
    """
    dataset = load_dataset(str(data))
    planted = json.loads(synth.read_text())
    truth = {entry["item"]: entry["category"] for entry in planted["items"]}
    parts = [str(data / part) for part in dataset.manifest["tables"]["items"]]
    items = pq.read_table(parts, columns=["item_id", "item_index"]).to_pydict()
    category = np.full(dataset.num_items + 1, -1, dtype=np.int64)
    for item_id, index in zip(items["item_id"], items["item_index"], strict=True):
        category[index] = truth[item_id]
    popularity = dataset.popularity.astype(np.float64)
    histories, targets = evaluation_cases(dataset.sequences, "test")

    def expected_hit(scores: np.ndarray, history: np.ndarray, target: int) -> float:
        scores = scores.astype(np.float64).copy()
        scores[0] = -np.inf
        scores[history[history != target]] = -np.inf
        others = np.delete(scores, target)
        above, tied = int((others > scores[target]).sum()), int((others == scores[target]).sum())
        return max(0, min(tied + 1, 10 - above)) / (tied + 1)

    sums = {"category": 0.0, "category x popularity": 0.0}
    for history, target in zip(histories, targets, strict=True):
        counts = np.bincount(category[history[-recent:]], minlength=int(category.max()) + 1)
        shared = np.where(category >= 0, counts[np.maximum(category, 0)], 0).astype(np.float64)
        sums["category"] += expected_hit(shared, history, int(target))
        sums["category x popularity"] += expected_hit(
            np.log(shared + 0.3) + np.log(popularity + 1), history, int(target)
        )
    result = {key: value / len(targets) for key, value in sums.items()}
    result["items_per_category"] = dataset.num_items / planted["config"]["categories"]
    return result


def _float(value: str | None) -> float:
    """A results.csv cell as a float (NaN when empty)."""
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _num(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b):
        return "-"
    if b == 0:
        return "inf (0 baseline)" if a > 0 else "- (both 0)"
    return f"{a / b:.2f}x"


def checks(rows: list[dict]) -> dict:
    """The issue's checks on one configuration's rows."""
    hr = {(r["arm"], r["subset"]): _float(r["HR@10"]) for r in rows}
    video_all, id_all = hr[(VIDEO, "all")], hr[("id", "all")]
    video_new, id_new, pop_new = hr[(VIDEO, "new")], hr[("id", "new")], hr[("popularity", "new")]
    return {
        "video_over_id_all": ratio(video_all, id_all),
        "all_ok": video_all >= 1.3 * id_all,
        "video_over_id_new": ratio(video_new, id_new),
        "video_over_popularity_new": ratio(video_new, pop_new),
        "new_ok": video_new >= 3 * id_new and video_new >= 2 * pop_new and video_new > 0,
    }


def markdown(results: list[dict], preset: str, train_args: str) -> str:
    lines = [
        f"Preset `{preset}`"
        + (f", train args `{train_args}`" if train_args else "")
        + "; HR@10 on test users.",
        "",
        "| config | arm | all | warm | rare | new | share of oracle (all) | share of oracle (new) | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        by = {(r["arm"], r["subset"]): r for r in result["rows"]}
        for arm in [a for a in ARMS if (a, "all") in by]:
            row = [result["config"], f"`{arm}`" if arm not in ("popularity", "oracle") else arm]
            row += [_num(_float(by[(arm, s)]["HR@10"])) for s in SUBSETS]
            row += [_num(_float(by[(arm, s)]["oracle_share"]), 2) for s in ("all", "new")]
            row += [_num(_float(by[(arm, "all")]["seconds"]), 0)]
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| config | test users (warm / rare / new) | video / id, all | >= 1.3x | video / id, new"
        " | video / popularity, new | new >= 3x id and 2x popularity | seconds, all arms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        by = {(r["arm"], r["subset"]): r for r in result["rows"]}
        users = "{} ({} / {} / {})".format(*(by[("id", s)]["users"] for s in SUBSETS))
        c = checks(result["rows"])
        seconds = [_float(by[(arm, "all")]["seconds"]) for arm in ARMS if (arm, "all") in by]
        trained = sum(x for x in seconds if not math.isnan(x))
        zero = _float(by[("id", "new")]["HR@10"]) == 0 and _float(by[("popularity", "new")]["HR@10"]) == 0
        new_ok = ("yes (both baselines 0)" if zero else "yes") if c["new_ok"] else "**no**"
        lines.append(
            f"| {result['config']} | {users} | {c['video_over_id_all']} | {'yes' if c['all_ok'] else '**no**'}"
            f" | {c['video_over_id_new']} | {c['video_over_popularity_new']}"
            f" | {new_ok} | {trained:.0f} |"
        )
    lines += [
        "",
        "What the planted signal allows (test HR@10 of idealised rankings, all users; `ceilings()`):",
        "",
        "| config | items per category | popularity arm | category only (what pixels carry)"
        " | category x popularity | oracle |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        by = {(r["arm"], r["subset"]): r for r in result["rows"]}
        bounds = result["ceilings"]
        lines.append(
            f"| {result['config']} | {bounds['items_per_category']:.0f} | {_num(_float(by[('popularity', 'all')]['HR@10']))} | {bounds['category']:.3f}"
            f" | {bounds['category x popularity']:.3f} | {_num(_float(by[('oracle', 'all')]['HR@10']))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/videorec-robustness"), help="work folder")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every step")
    parser.add_argument("--train-args", default="", help="extra videorec train flags for every arm")
    parser.add_argument(
        "--markdown", type=Path, help="also write the table here (default: OUT/robustness.md)"
    )
    args = parser.parse_args(argv)
    results = []
    for name in args.configs:
        print(f"robustness: {name}", flush=True)
        results.append(run_config(CONFIGS[name], args.out / name, args.preset, args.threads, args.train_args))
    table = markdown(results, args.preset, args.train_args)
    (args.markdown or args.out / "robustness.md").write_text(table)
    (args.out / "robustness.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
