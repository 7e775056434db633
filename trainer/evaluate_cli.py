"""``videorec evaluate``: full-ranking HR@K / NDCG@K of a saved checkpoint.

The checkpoint carries its run config, the dataset version it was trained on and the
encoder's architecture (``encoder_spec``), so the pretrained weights or feature table the
run started from are not needed again; ``--data`` evaluates on another dataset version with
the same item indexing. Scores are fp32; ``--amp`` encodes items under bf16 autocast on CUDA.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.dataset import load_dataset
from trainer.evaluate import encode_items, score_split
from trainer.models.videorec import build_model
from trainer.progress import summary_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videorec evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    parser.add_argument("--data", help="dataset to score on (default: the one the checkpoint was trained on)")
    parser.add_argument(
        "--split", choices=["valid", "test", "both"], default="test", help="leave-one-out split"
    )
    parser.add_argument("--batch-size", type=int, help="users / items per evaluation batch")
    parser.add_argument("--num-workers", type=int, default=0, help="item-decoding loader workers")
    parser.add_argument("--amp", action="store_true", help="encode items under bf16 autocast (CUDA only)")
    parser.add_argument("--output", help="also write the metrics as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = checkpoint.load(args.checkpoint)
    config = TrainConfig.from_dict(state["config"])
    dataset = load_dataset(args.data or state["dataset_root"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(config.model, dataset.num_items, encoder_spec=state["encoder_spec"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    batch_size = args.batch_size or config.eval_batch_size
    items = encode_items(
        model,
        dataset,
        config.data.frame_size,
        config.data.squash,
        batch_size,
        device,
        num_workers=args.num_workers,
        autocast=args.amp and device.type == "cuda",
    )
    splits = ["valid", "test"] if args.split == "both" else [args.split]
    results = {
        split: score_split(
            model,
            dataset,
            split,
            items,
            max_seq_len=config.model.max_seq_len,
            batch_size=batch_size,
            device=device,
        )
        for split in splits
    }
    print(summary_table(results))
    print(json.dumps(items.stats()))
    if args.output:
        with open(args.output, "w") as out:
            json.dump(
                {
                    "checkpoint": args.checkpoint,
                    "dataset_version": dataset.version,
                    "items": items.stats(),
                    **results,
                },
                out,
                indent=2,
                sort_keys=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
