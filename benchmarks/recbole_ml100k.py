"""Benchmark: our ``id`` SASRec (preset ``sasrec-ml``) against RecBole's SASRec on the same MovieLens-100K split.

One benchmark run does:

1. ``videorec ingest --format movielens --max-seq-len 50`` on ``ml-100k/u.data`` (skipped with ``--data``);
2. our side: ``videorec train --preset sasrec-ml --encoder id --epochs N`` (``--ours-epochs``, default 30
   like the preset; 8 epochs, 296 optimizer steps, stop well short of the validation plateau),
   more flags after ``--ours-args``; or ``--ours RUN_DIR...`` reads existing runs' ``results.json``;
3. RecBole's side: a RecBole atomic file written from OUR ``sequences.parquet``, each interaction's
   timestamp replaced by its position in our ordered sequence, so that RecBole's time ordering and its
   leave-one-out split are ours exactly, ties included (checked for every user at evaluation); then
   RecBole 1.2.1's SASRec with the standard MovieLens settings (``RECBOLE_CONFIG``: the same as our preset,
   CE loss over all items, no negative sampling, no filtering), early stopping on validation NDCG@10, in a
   child process of its own virtual environment (``--recbole-python``);
4. the best-validation RecBole model is scored twice on test: by RecBole's own full-sort evaluation, which
   for sequential models does NOT mask the user's earlier items, and under our protocol (earlier items
   masked, rank = items scoring strictly higher: ``trainer/evaluate.py``). Our runs are compared with the
   second, the same protocol; the table shows both, and the JSON (``--out``) holds everything.

RecBole needs its own environment, never the project's (numpy<2, pandas<2.2, scipy<1.14, setuptools<81;
numpy 2 / pandas 2.3 also work: the child restores the numpy aliases RecBole still uses):

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install "setuptools<81" torch==2.13.0
    /tmp/recbole-venv/bin/pip install recbole==1.2.1 "numpy<2" "pandas<2.2" "scipy<1.14" "setuptools<81"
    .venv/bin/python benchmarks/recbole_ml100k.py --recbole-python /tmp/recbole-venv/bin/python \
        [--ours RUN_DIR ...] [--ours-epochs 30] [--recbole-epochs 100] [--out recbole_ml100k.json]

Cost: RecBole's SASRec stops after about 18 epochs, about 85 s each on 2 idle CPU cores (up to 10 min
on busy ones) and 13 s on a GPU (its data loader is the bottleneck). Our 30-epoch run takes about
2.5 min on 2 idle CPU cores. Both are deterministic: the same seeds give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INTERACTIONS = REPO.parent / "shared" / "data" / "interactions" / "ml-100k" / "u.data"
VIDEOREC = [sys.executable, "-m", "pipeline.cli"]
RECBOLE_DATASET = "ml100k_videorec"
METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")
RECBOLE_METRIC_NAMES = {"HR@10": "hit@10", "NDCG@10": "ndcg@10", "HR@20": "hit@20", "NDCG@20": "ndcg@20"}
TOLERANCE = 0.10

RECBOLE_CONFIG = {
    "model": "SASRec",
    "MAX_ITEM_LIST_LENGTH": 50,
    "hidden_size": 64,
    "inner_size": 256,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dropout_prob": 0.2,
    "attn_dropout_prob": 0.2,
    "hidden_act": "gelu",
    "learning_rate": 1e-3,
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "metrics": ["Hit", "NDCG"],
    "topk": [10, 20],
    "valid_metric": "NDCG@10",
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "user_inter_num_interval": "[0,inf)",
    "item_inter_num_interval": "[0,inf)",
    "eval_batch_size": 4096,
    "show_progress": False,
    "save_dataset": False,
    "save_dataloaders": False,
    "reproducibility": True,
}
"""RecBole's side: the standard MovieLens SASRec settings, the same as our ``sasrec-ml`` preset
(L=50, d=64, FFN 256, 2 blocks, 2 heads, dropout 0.2, lr 1e-3, full softmax); filtering off because
our ingest already filtered users."""

RECBOLE_CHILD = """
import json, os, sys
from logging import getLogger
import numpy as np
# RecBole 1.2.1 still uses aliases numpy removed in 1.24 (np.float...) and 2.0 (np.float_...).
aliases = {"float": float, "int": int, "bool": bool, "object": object, "complex": complex, "long": int,
           "unicode": str, "str": str, "float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
for alias, kind in aliases.items():
    if not hasattr(np, alias):
        setattr(np, alias, kind)
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_logger, init_seed
torch.set_num_threads(int(os.environ.get("RECBOLE_THREADS", "2")))
config_dict = json.loads(sys.argv[1])
# run_recbole's steps, without importing recbole.quick_start (which needs ray).
config = Config(model=config_dict.pop("model"), dataset=config_dict.pop("dataset"), config_dict=config_dict)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
getLogger().info(config)
dataset = create_dataset(config)
getLogger().info(dataset)
train_data, valid_data, test_data = data_preparation(config, dataset)
init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)


def user_sequences(inter_path):
    \"\"\"user token -> item tokens in our order (the atomic file is written user by user, in order).\"\"\"
    sequences = {}
    with open(inter_path) as lines:
        next(lines)
        for line in lines:
            user, item, _ = line.rstrip("\\n").split("\\t")
            sequences.setdefault(user, []).append(item)
    return sequences


def history_masked_metrics(eval_data, sequences, held_out):
    \"\"\"HR/NDCG@10/20 of the trained model under our protocol: the user's items before the target are
    masked (RecBole does not mask them for sequential models), a target's rank is the number of items
    scoring strictly higher. Also checks that RecBole's target is our sequence's held-out item.\"\"\"
    uid_field, iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    sums, cases = {key: 0.0 for key in ("HR@10", "NDCG@10", "HR@20", "NDCG@20")}, 0
    trainer.model.eval()
    with torch.no_grad():
        for batch in eval_data:
            interaction = batch[0].to(config["device"])
            scores = trainer.model.full_sort_predict(interaction).view(len(interaction), -1)
            scores[:, 0] = -float("inf")
            targets = interaction[iid_field]
            users = dataset.id2token(uid_field, interaction[uid_field].cpu().numpy())
            for row, user in enumerate(users):
                sequence = sequences[user]
                if dataset.id2token(iid_field, int(targets[row])) != sequence[-held_out]:
                    raise RuntimeError(f"RecBole's target for user {user} is not our held-out item")
                history = dataset.token2id(iid_field, sequence[:-held_out])
                history = torch.as_tensor(history, device=scores.device)
                scores[row, history[history != targets[row]]] = -float("inf")
            ranks = (scores > scores.gather(1, targets[:, None])).sum(1)
            for k in (10, 20):
                hits = ranks < k
                sums[f"HR@{k}"] += hits.sum().item()
                sums[f"NDCG@{k}"] += (hits / torch.log2(ranks + 2.0)).sum().item()
            cases += len(users)
    return {key: value / cases for key, value in sums.items()}


sequences = user_sequences(os.path.join(config["data_path"], config["dataset"] + ".inter"))
result = {
    "best_valid_result": best_valid_result,
    "test_result": test_result,
    "valid_history_masked": history_masked_metrics(valid_data, sequences, held_out=2),
    "test_history_masked": history_masked_metrics(test_data, sequences, held_out=1),
    "device": str(config["device"]),
}
print("RECBOLE_RESULT " + json.dumps(result, default=float))
"""
"""Runs in RecBole's environment; prints its result dict (best valid score, valid and test metrics)."""


def write_recbole_atomic(dataset: Path, folder: Path) -> int:
    """Write ``folder/RECBOLE_DATASET.inter`` (tab-separated ``user_id:token item_id:token
    timestamp:float``) from our dataset's sequences table: one row per interaction, the timestamp being
    its position in our ordered sequence. Returns the number of interactions written."""
    from transforms.manifest import read_version_manifest
    from transforms.tables import read_table

    folder.mkdir(parents=True, exist_ok=True)
    table = read_table(
        str(dataset), read_version_manifest(str(dataset)), "sequences", ["user_id", "item_ids"]
    ).to_pylist()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for row in table:
        lines += [f"{row['user_id']}\t{item}\t{position}" for position, item in enumerate(row["item_ids"])]
    (folder / f"{RECBOLE_DATASET}.inter").write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def ingest(interactions: Path, output: Path) -> None:
    """Our ingest of the MovieLens ratings, leave-one-out, sequences of at most 50 items."""
    argv = ["ingest", f"--interactions={interactions}", "--format=movielens", "--max-seq-len=50"]
    argv += [f"--output={output}", "--direct_running_mode=in_memory", "--quiet"]
    subprocess.run(VIDEOREC + argv, cwd=REPO, check=True)


def train_ours(data: Path, run_dir: Path, epochs: int, extra_args: list[str]) -> dict:
    """Our ``sasrec-ml`` run; returns its ``results.json`` with the wall time added."""
    argv = ["train", f"--data={data}", "--preset=sasrec-ml", "--encoder=id", f"--output={run_dir}"]
    argv += [f"--epochs={epochs}"]
    started = time.perf_counter()
    subprocess.run(VIDEOREC + argv + ["--no-progress"] + extra_args, cwd=REPO, check=True)
    return {**read_ours(run_dir), "wall_s": time.perf_counter() - started}


def read_ours(run_dir: Path) -> dict:
    """Test and best-validation metrics of one of our runs, from its ``results.json``."""
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "test": {key: results["test"][key] for key in METRICS},
        "valid": {key: results["valid"][key] for key in METRICS},
        "steps": results.get("steps"),
        "run_dir": str(run_dir),
    }


def train_recbole(
    recbole_python: str,
    atomic_root: Path,
    work: Path,
    epochs: int,
    batch_size: int,
    stopping_step: int,
    seed: int,
) -> dict:
    """RecBole's SASRec in a child process of its own environment; its logs go to ``work/log``."""
    config = {
        **RECBOLE_CONFIG,
        "dataset": RECBOLE_DATASET,
        "data_path": str(atomic_root),
        "checkpoint_dir": str(work / "saved"),
        "epochs": epochs,
        "train_batch_size": batch_size,
        "stopping_step": stopping_step,
        "seed": seed,
    }
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    completed = subprocess.run(
        [recbole_python, "-c", RECBOLE_CHILD, json.dumps(config)],
        cwd=work,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    wall_s = time.perf_counter() - started
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RECBOLE_RESULT "))
    result = json.loads(line.removeprefix("RECBOLE_RESULT "))
    return {
        "test": result["test_history_masked"],
        "valid": result["valid_history_masked"],
        "test_recbole_protocol": {
            key: result["test_result"][name] for key, name in RECBOLE_METRIC_NAMES.items()
        },
        "valid_recbole_protocol": {
            key: result["best_valid_result"][name] for key, name in RECBOLE_METRIC_NAMES.items()
        },
        "config": config,
        "device": result["device"],
        "wall_s": wall_s,
    }


def compare(ours: dict, recbole: dict) -> dict:
    """Relative difference of one of our runs' test metrics to RecBole's under the same protocol
    (history masked): ``(ours - recbole) / recbole``."""
    relative = {key: (ours["test"][key] - recbole["test"][key]) / recbole["test"][key] for key in METRICS}
    headline = [relative[key] for key in ("HR@10", "NDCG@10")]
    return {
        "relative_difference": relative,
        "within_10pct": all(abs(value) <= TOLERANCE for value in headline),
        "not_worse_than_10pct": all(value >= -TOLERANCE for value in headline),
    }


def print_table(ours_runs: dict[str, dict], recbole: dict, comparisons: dict[str, dict]) -> None:
    """Markdown table of test metrics: RecBole under both protocols, then each of our runs."""

    def row(name: str, values: dict, fmt: str = ".4f") -> None:
        print(f"| {name} | {' | '.join(format(values[key], fmt) for key in METRICS)} |")

    print(f"| test (full ranking, 943 users) | {' | '.join(METRICS)} |")
    print(f"|---|{'---|' * len(METRICS)}")
    row("RecBole SASRec, RecBole's protocol (history not masked)", recbole["test_recbole_protocol"])
    row("RecBole SASRec, our protocol (history masked)", recbole["test"])
    for name, ours in ours_runs.items():
        row(f"ours `id` sasrec-ml ({name})", ours["test"])
        row(f"relative to RecBole, our protocol ({name})", comparisons[name]["relative_difference"], "+.1%")
    for name, comparison in comparisons.items():
        print(
            f"{name}: within 10% of RecBole on HR@10 and NDCG@10: {comparison['within_10pct']}; "
            f"not worse by more than 10%: {comparison['not_worse_than_10pct']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interactions", type=Path, default=DEFAULT_INTERACTIONS, help="ml-100k u.data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/recbole_ml100k"), help="scratch folder")
    parser.add_argument("--data", type=Path, help="an existing ingest of ml-100k (skips the ingest)")
    parser.add_argument(
        "--ours", type=Path, nargs="+", default=[], help="existing sasrec-ml run folders (skips our training)"
    )
    parser.add_argument(
        "--ours-args", nargs=argparse.REMAINDER, default=[], help="extra videorec train flags"
    )
    parser.add_argument("--recbole-python", required=True, help="python of RecBole's virtual environment")
    parser.add_argument("--ours-epochs", type=int, default=30, help="epochs of our run (as the preset)")
    parser.add_argument("--recbole-epochs", type=int, default=100, help="cap; early stopping ends sooner")
    parser.add_argument("--recbole-batch-size", type=int, default=256)
    parser.add_argument("--recbole-stopping-step", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", type=Path, default=Path("recbole_ml100k.json"))
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or args.work / "dataset"
    if args.data is None:
        ingest(args.interactions, data)
    interactions = write_recbole_atomic(data, args.work / "atomic" / RECBOLE_DATASET)
    print(f"RecBole atomic file: {interactions} interactions")

    if args.ours:
        ours_runs = {run_dir.name: read_ours(run_dir) for run_dir in args.ours}
    else:
        run_name = f"sasrec-ml-{args.ours_epochs}ep"
        ours_runs = {run_name: train_ours(data, args.work / run_name, args.ours_epochs, args.ours_args)}
    recbole = train_recbole(
        args.recbole_python,
        args.work / "atomic",
        args.work,
        args.recbole_epochs,
        args.recbole_batch_size,
        args.recbole_stopping_step,
        args.seed,
    )
    comparisons = {name: compare(ours, recbole) for name, ours in ours_runs.items()}
    print_table(ours_runs, recbole, comparisons)
    report = {"dataset": str(data), "ours": ours_runs, "recbole": recbole, "comparisons": comparisons}
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
