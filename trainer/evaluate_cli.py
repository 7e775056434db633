"""``videorec evaluate``: full-ranking HR@K / NDCG@K of a saved checkpoint.

The checkpoint carries its run config, the dataset version it was trained on and the
encoder's architecture (``encoder_spec``), so the pretrained weights or feature table the
run started from are not needed again; ``--data`` evaluates on another dataset version with
the same item indexing (a different version is scored with a warning). Scores are fp32; ``--amp``
encodes items under bf16 autocast on CUDA.

Refusals print one line, ``videorec evaluate: error: ...``, and exit 2: a missing, damaged or
foreign checkpoint, an unusable dataset, a frames model on an ID-only dataset, or a dataset whose
item count does not fit the checkpoint. More items that fail to encode than ``--max-lost-fraction``
(default: the run's) allows exits 4: the metrics would rank a smaller catalogue.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from dataformat.format import MANIFEST_FILE
from trainer import checkpoint, storage
from trainer.config import DataConfig, TrainConfig
from trainer.dataset import load_dataset
from trainer.errors import DatasetError, UsageError, run_command
from trainer.evaluate import encode_item_table, score_split
from trainer.item_store import add_item_cache_flags, item_store_for
from trainer.models.videorec import build_videorec
from trainer.progress import dumps_strict, summary_table
from trainer.run_eval import check_items_lost

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videorec evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    parser.add_argument("--data", help="dataset to score on (default: the one the checkpoint was trained on)")
    parser.add_argument(
        "--split", choices=["valid", "test", "both"], default="test", help="leave-one-out split"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="users per evaluation batch (video items are encoded --item-batch-size at a time, as in training)",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="item-decoding loader workers")
    parser.add_argument("--amp", action="store_true", help="encode items under bf16 autocast (CUDA only)")
    parser.add_argument("--output", help="also write the metrics as JSON here")
    parser.add_argument(
        "--max-lost-fraction",
        type=float,
        help="most items that may fail to encode before the run is refused (exit 4; default: the run's)",
    )
    add_item_cache_flags(parser)
    return parser


def load_model(state: dict, config: TrainConfig, dataset, device: torch.device):
    """The checkpoint's model for ``dataset``, in eval mode.

    Raises:
        UsageError: a frames model on an ID-only dataset.
        DatasetError: the dataset's item count does not fit the checkpoint.
    """
    model = build_videorec(config.model, dataset.num_items, encoder_spec=state["encoder_spec"])
    if model.needs_frames and not dataset.has_frames:
        raise UsageError(
            f"the checkpoint's encoder {config.model.encoder!r} needs frames but --data {dataset.root} has "
            "none (ID-only); evaluate it on a dataset ingested with --videos"
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # tensor shapes: another item count
        first = " ".join(str(err).split())[:200]
        raise DatasetError(
            f"the checkpoint does not fit --data {dataset.root} ({dataset.num_items} items; {first}); "
            "evaluate on the dataset it was trained on, or one with the same items"
        ) from None
    return model.to(device).eval()


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Score the checkpoint as ``args`` say; raises ``trainer.errors`` refusals."""
    fix = "give the checkpoints/best.pt or last.pt of a videorec train run"
    state = checkpoint.read(args.checkpoint, fix=fix)
    config = TrainConfig.from_dict(state["config"])
    trained_on = str(state["dataset_root"])
    if not args.data and not storage.exists(storage.join_url(trained_on, MANIFEST_FILE)):
        raise DatasetError(
            f"the dataset the checkpoint was trained on ({trained_on}) is gone; pass --data with a copy of "
            f"version {state['dataset_version']!r}, or another version with the same items"
        )
    dataset = load_dataset(args.data or trained_on)
    if dataset.version != str(state["dataset_version"]):
        log.warning(
            "the checkpoint was trained on dataset version %s; scoring on version %s (%s), which must "
            "index the same items",
            state["dataset_version"],
            dataset.version,
            dataset.root,
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(state, config, dataset, device)
    batch_size = args.batch_size or config.eval_batch_size
    cache = DataConfig(item_cache=args.item_cache, item_cache_max_gb=args.item_cache_max_gb)
    items = encode_item_table(
        model,
        dataset,
        config.data.frame_size,
        config.data.squash,
        config.item_batch_size,
        device,
        store=item_store_for(dataset, cache) if model.needs_frames else None,
        num_workers=args.num_workers,
        autocast=args.amp and device.type == "cuda",
    )
    allowed = config.data.max_lost_fraction if args.max_lost_fraction is None else args.max_lost_fraction
    check_items_lost(items, dataset.num_items, allowed)
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
    print(dumps_strict(items.stats()))
    if args.output:
        with open(args.output, "w") as out:
            document = {"checkpoint": args.checkpoint, "dataset_version": dataset.version}
            out.write(dumps_strict({**document, "items": items.stats(), **results}, indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("videorec evaluate", lambda: evaluate_checkpoint(args))


if __name__ == "__main__":
    sys.exit(main())
