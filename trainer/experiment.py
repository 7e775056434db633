"""``videorec experiment``: the paper's comparison on one dataset version, as one resumable job.

Arms, all on the same dataset version, split and seed (``--seed``):

- ``popularity``: rank by training popularity (no training);
- ``id``: SASRec over ID embeddings;
- ``frozen-ENC``: SASRec over features of ``videorec extract --encoder ENC`` (frozen backbone);
- ``topk-ENC``: end to end, the top ``--trainable-blocks`` encoder blocks train;
- ``full-ENC``: end to end, the whole encoder trains;
- (``frozen`` and ``topk`` arms need pretrained weights: without ``--encoder-weights``, the preset's own
  weights of that encoder (top-k) or ``--allow-random-backbone`` they are skipped, and said so);
- ``oracle`` (synth datasets only): ranks each user's candidates by the preferences planted in
  ``synth.json`` (items of the user's final preferred categories first, then by planted
  popularity), the ceiling an arm's *share of the oracle* is measured against.

Each trained arm is one ``videorec train`` run in ``DIR/arms/ARM`` in its own process, so it
resumes from its ``last.pt`` after a kill exactly as ``train`` does, and its peak resident memory
and GPU memory are the process's own (VmHWM, ``torch.cuda.max_memory_allocated``); ``seconds`` is
the wall time of the arm's last (completing) attempt, extraction included. An arm whose ``results.json`` and ``arm.json`` exist is
complete and is skipped on a rerun. Outputs: ``DIR/results.csv`` and ``DIR/results.md`` (one row
per arm and user subset: users, HR/NDCG@10/20, seconds, peak RSS and GPU memory, share of the
oracle's HR@10) and ``DIR/results.png`` (HR@10 per arm for all, warm, rare and new users).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trainer.config import preset
from trainer.dataset import DatasetInfo, load_dataset
from trainer.errors import UsageError, run_command
from trainer.experiment_folder import arm_matches, claim_folder

SUBSETS = ("all", "warm", "rare", "new")
METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")
ARM_FILE = "arm.json"
RESULTS_FILE = "results.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videorec experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder, manifest.json or root with LATEST")
    parser.add_argument("--output", required=True, metavar="DIR", help="experiment folder")
    parser.add_argument("--preset", default="tiny", help="videorec train preset of every trained arm")
    parser.add_argument(
        "--encoders", nargs="+", default=["tiny"], help="video encoders: frozen, top-k and full arms of each"
    )
    parser.add_argument("--encoder-weights", help="pretrained weights of the video encoders")
    parser.add_argument(
        "--allow-random-backbone",
        action="store_true",
        help="frozen and top-k arms on random backbones (ablations, tests; says so in the table)",
    )
    parser.add_argument("--trainable-blocks", type=int, default=1, help="blocks that train in top-k arms")
    parser.add_argument("--seed", type=int, default=0, help="seed of every trained arm")
    parser.add_argument("--synth", help="synth.json for the oracle (default: next to the interactions file)")
    parser.add_argument(
        "--train-args", default="", help="extra videorec train flags for every trained arm, one string"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start over in an experiment folder made with another dataset version or other settings "
        "(what the experiment wrote there is removed first)",
    )
    return parser


def folder_record(args: argparse.Namespace, dataset: DatasetInfo) -> dict:
    """What ``experiment.json`` records: the dataset version and every setting the arms depend on."""
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in ("data", "output", "restart")}
    return {"dataset_version": dataset.version, "settings": settings}


def arm_commands(args: argparse.Namespace, out: Path) -> dict[str, list[list[str]]]:
    """``{arm: [argv of each python -m step]}`` of every trained arm, in running order."""
    common = ["--data", args.data, "--preset", args.preset, "--seed", str(args.seed), "--no-progress"]
    common += args.train_args.split()
    random = ["--allow-random-backbone"] if args.allow_random_backbone else []
    weights = ["--encoder-weights", args.encoder_weights] if args.encoder_weights else []
    arms = {"id": [["trainer.train", *common, "--encoder", "id", "--output", str(out / "id")]]}
    for encoder in args.encoders:
        features = out / f"frozen-{encoder}" / "features.npy"
        extract = ["trainer.extract", "--data", args.data, "--encoder", encoder, "--output", str(features)]
        arms[f"frozen-{encoder}"] = [
            [*extract, *weights, *random],
            [
                "trainer.train",
                *common,
                "--encoder",
                "frozen",
                "--features",
                str(features),
                "--output",
                str(out / f"frozen-{encoder}"),
            ],
        ]
        video = ["trainer.train", *common, "--encoder", encoder, *weights]
        arms[f"topk-{encoder}"] = [
            [
                *video,
                *random,
                "--freeze",
                "top-k",
                "--trainable-blocks",
                str(args.trainable_blocks),
                "--output",
                str(out / f"topk-{encoder}"),
            ]
        ]
        arms[f"full-{encoder}"] = [[*video, "--freeze", "all", "--output", str(out / f"full-{encoder}")]]
    for name in skipped_arms(args):
        del arms[name]
    return arms


def skipped_arms(args: argparse.Namespace) -> list[str]:
    """The frozen and top-k arms that would stand on a randomly initialised backbone, which ``train``
    and ``extract`` refuse: no ``--encoder-weights`` (nor, for top-k, the preset's own weights of
    that encoder) and no ``--allow-random-backbone``. The experiment runs without them."""
    if args.encoder_weights or args.allow_random_backbone:
        return []
    own = preset(args.preset).model
    skipped = []
    for encoder in args.encoders:
        skipped.append(f"frozen-{encoder}")
        if not (own.encoder == encoder and own.encoder_weights):
            skipped.append(f"topk-{encoder}")
    return skipped


# Runs a module as ``python -m`` would, then writes the process's own peak memory: VmHWM belongs to
# the process's address space, so (unlike ru_maxrss) it does not count the parent copied at fork.
_MEASURED = """
import json, runpy, sys
module, report = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code or 0
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
gpu = 0.0
if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
    gpu = sys.modules["torch"].cuda.max_memory_allocated() / 2**20
json.dump({"peak_rss_mib": int(status) / 1024, "peak_gpu_mib": gpu}, open(report, "w"))
sys.exit(code)
"""


def run_step(argv: list[str], report: Path) -> dict:
    """Run ``python -m argv...`` to completion in its own process; its seconds and peak memory (MiB)."""
    started = time.perf_counter()
    code = subprocess.run([sys.executable, "-c", _MEASURED, argv[0], str(report), *argv[1:]]).returncode
    if code:
        raise RuntimeError(f"arm step failed with exit status {code}: {' '.join(argv)}")
    return {"seconds": time.perf_counter() - started, **json.loads(report.read_text())}


def run_arm(name: str, steps: list[list[str]], folder: Path, dataset_version: str) -> dict:
    """Run an arm's steps unless it is complete; its ``arm.json`` (seconds, peak memory, test metrics,
    and the dataset version and steps it was made with).

    Raises:
        UsageError: a complete arm made from another dataset version or with other steps.
    """
    record_path = folder / ARM_FILE
    if record_path.exists() and (folder / RESULTS_FILE).exists():
        record = json.loads(record_path.read_text())
        if not arm_matches(record, dataset_version, steps):
            raise UsageError(
                f"arm {name} in {folder} was trained on dataset version {record.get('dataset_version')!r} "
                f"or with other steps, not on {dataset_version!r} with these; pass --restart to start over"
            )
        print(f"experiment: {name} is complete, skipped", flush=True)
        return record
    print(f"experiment: running {name}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    measured = [run_step(argv, folder / "step.json") for argv in steps]
    results = json.loads((folder / RESULTS_FILE).read_text())
    record = {
        "arm": name,
        "seconds": sum(m["seconds"] for m in measured),
        "peak_rss_mib": max(m["peak_rss_mib"] for m in measured),
        "peak_gpu_mib": max(m["peak_gpu_mib"] for m in measured),
        "test": results["test"],
        "dataset_version": dataset_version,
        "steps": steps,
    }
    record_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def synth_truth(dataset: DatasetInfo, explicit: str | None) -> dict | None:
    """The synth.json of the dataset's interactions, if there is one (``explicit`` must exist)."""
    if explicit:
        return json.loads(Path(explicit).read_text(encoding="utf-8"))
    interactions = str(dataset.manifest.get("config", {}).get("interactions") or "")
    candidate = Path(interactions.split(",")[0]).parent / "synth.json"
    return json.loads(candidate.read_text(encoding="utf-8")) if interactions and candidate.exists() else None


def oracle_metrics(dataset: DatasetInfo, truth: dict) -> dict[str, float]:
    """Test metrics of ranking by the planted preferences (same masking, ties and subsets as every arm).

    Score of item ``i`` for user ``u``: ``2**20`` if ``i``'s category is one of ``u``'s final
    preferred categories, plus ``i``'s planted popularity (its count in the generated log).
    """
    import pyarrow.parquet as pq

    from trainer.evaluate import evaluation_cases, score_users, seen_in_training

    def table(name: str, columns: list[str]):
        return pq.read_table(
            [str(Path(dataset.root) / p) for p in dataset.manifest["tables"][name]], columns=columns
        )

    items = table("items", ["item_id", "item_index"]).to_pydict()
    truth_items = {entry["item"]: entry for entry in truth["items"]}
    category = np.full(dataset.num_items + 1, -1, dtype=np.int64)
    popularity = np.zeros(dataset.num_items + 1, dtype=np.float64)
    for item_id, index in zip(items["item_id"], items["item_index"], strict=True):
        category[index] = truth_items[item_id]["category"]
        popularity[index] = truth_items[item_id]["popularity"]
    users = table("sequences", ["user_id", "user_index"]).to_pydict()
    user_of_index = dict(zip(users["user_index"], users["user_id"], strict=True))
    preferred = {u["user"]: u["preferred_categories"]["final"] for u in truth["users"]}
    histories, targets = evaluation_cases(dataset.sequences, "test")
    test_users = [
        user_of_index[int(dataset.sequences.user_index[row])]
        for row in range(len(dataset.sequences))
        if len(dataset.sequences.sequence(row)) > 1
    ]
    scores = np.stack([np.isin(category, preferred[user]) * 2.0**20 + popularity for user in test_users])
    batch = 256
    position = iter(range(0, len(test_users), batch))

    def score(window: torch.Tensor) -> torch.Tensor:
        start = next(position)
        return torch.from_numpy(scores[start : start + len(window)])

    return score_users(
        score,
        histories,
        targets,
        1,
        batch,
        torch.device("cpu"),
        rare_items=dataset.rare_items(),
        seen_items=seen_in_training(dataset),
    )


def rows_of(arm: str, metrics: dict[str, float], record: dict | None = None) -> list[dict]:
    """One row per user subset of an arm's test metrics (``record``: its ``arm.json``, if trained)."""
    record = record or {}
    rows = []
    for subset in SUBSETS:
        suffix = "" if subset == "all" else f"/{subset}"
        row = {"arm": arm, "subset": subset, "users": int(metrics.get(f"users{suffix}", 0))}
        values = {m: metrics.get(f"{m}{suffix}") for m in METRICS}
        row.update({m: float("nan") if v is None else v for m, v in values.items()})  # null: no users
        row.update({key: record.get(key) for key in ("seconds", "peak_rss_mib", "peak_gpu_mib")})
        rows.append(row)
    return rows


def add_oracle_share(rows: list[dict]) -> None:
    """``oracle_share`` = the arm's HR@10 / the oracle's HR@10 on the same subset (when there is an oracle)."""
    oracle = {r["subset"]: r["HR@10"] for r in rows if r["arm"] == "oracle"}
    for row in rows:
        best = oracle.get(row["subset"])
        row["oracle_share"] = row["HR@10"] / best if best else float("nan")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Grouped bars: HR@10 per arm (groups) and subset (bars), values written on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(r["arm"] for r in rows))
    value = {(r["arm"], r["subset"]): r["HR@10"] for r in rows}
    width = 0.8 / len(SUBSETS)
    figure, axes = plt.subplots(figsize=(max(8, 1.6 * len(arms)), 5), dpi=100)
    for k, subset in enumerate(SUBSETS):
        heights = [np.nan_to_num(value[(arm, subset)]) for arm in arms]
        positions = np.arange(len(arms)) + (k - (len(SUBSETS) - 1) / 2) * width
        bars = axes.bar(positions, heights, width, label=subset)
        axes.bar_label(bars, labels=[f"{h:.2f}" for h in heights], fontsize=7, padding=1)
    axes.set_xticks(np.arange(len(arms)), arms)
    axes.set_xlabel("model (arm)")
    axes.set_ylabel("HR@10 on test users")
    axes.set_ylim(0, 1.1 * max(1e-3, max(np.nan_to_num(list(value.values())))))
    axes.set_title(title)
    axes.legend(title="test users")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("videorec experiment", lambda: run_experiment(args))


def run_experiment(args: argparse.Namespace) -> int:
    out = Path(args.output)
    dataset = load_dataset(args.data)
    claim_folder(out, folder_record(args, dataset), args.restart)
    (out / "arms").mkdir(exist_ok=True)
    from trainer.evaluate import popularity_baseline

    rows = rows_of("popularity", popularity_baseline(dataset, "test"))
    if skipped_arms(args):
        print(
            f"experiment: skipped {', '.join(skipped_arms(args))}: no pretrained weights for their backbone; "
            "pass --encoder-weights, or --allow-random-backbone to run them on a random one",
            flush=True,
        )
    for name, steps in arm_commands(args, out / "arms").items():
        record = run_arm(name, steps, out / "arms" / name, dataset.version)
        rows += rows_of(name, record["test"], record)
    truth = synth_truth(dataset, args.synth)
    if truth is not None:
        rows += rows_of("oracle", oracle_metrics(dataset, truth))
    add_oracle_share(rows)
    write_csv(rows, out / "results.csv")
    table = markdown_table(rows)
    (out / "results.md").write_text(table)
    plot(rows, out / "results.png", f"HR@10 per model, dataset {dataset.version}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
