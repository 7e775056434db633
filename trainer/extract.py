"""``videorec extract``: item features from a frozen video backbone, for the ``frozen`` baseline.

Writes ``OUTPUT.npy`` (float32 ``[num_items + 1, F]``, row 0 = padding = zeros, rows of
items that could not be encoded (frames that do not decode, items the item store cannot
read) are NaN, so they can never pass for features) and ``OUTPUT.json`` describing how it
was made, with those counts. The table is read back with ``numpy.load(allow_pickle=False)``.
A frozen backbone needs pretrained ``--encoder-weights`` (``--allow-random-backbone`` for
ablations).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from trainer.config import DataConfig
from trainer.data import ItemStream, item_loader
from trainer.dataset import load_dataset
from trainer.frames import FrameTransform
from trainer.item_store import add_item_cache_flags, item_store_for
from trainer.models.encoder_registry import ENCODERS, build_backbone
from trainer.models.video_item_encoder import VideoItemEncoder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videorec extract", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder, manifest.json or root with LATEST")
    parser.add_argument("--encoder", required=True, choices=sorted(ENCODERS), help="video backbone")
    parser.add_argument(
        "--encoder-weights",
        help="weights name (read from the torch hub cache), state-dict file or model folder",
    )
    parser.add_argument(
        "--allow-random-backbone", action="store_true", help="extract with random weights (ablations only)"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="item-decoding loader workers")
    parser.add_argument("--frame-size", type=int, default=112, help="square frame side given to the backbone")
    parser.add_argument("--squash", action="store_true", help="resize ignoring aspect instead of centre crop")
    parser.add_argument("--batch-size", type=int, default=32, help="items per forward pass")
    parser.add_argument("--output", required=True, help="feature table path (.npy)")
    add_item_cache_flags(parser)
    return parser


@torch.no_grad()
def extract_features(
    data: str,
    encoder: str,
    weights: str | None,
    frame_size: int,
    squash: bool,
    batch_size: int,
    device: torch.device,
    *,
    allow_random_backbone: bool = False,
    num_workers: int = 0,
    cache: DataConfig | None = None,
) -> tuple[np.ndarray, dict]:
    """(feature table ``[num_items + 1, F]``, description) for every item of the dataset; ``cache``:
    where remote item shards are cached (its ``item_cache`` fields; default: ``DataConfig``'s)."""
    if not weights and not allow_random_backbone:
        raise ValueError(
            "frozen features from a randomly initialised backbone: pass --encoder-weights "
            "(or --allow-random-backbone for an ablation)"
        )
    dataset = load_dataset(data)
    if not dataset.has_frames:
        raise ValueError(f"{dataset.root}: dataset has no frames to extract features from")
    backbone = build_backbone(encoder, weights, num_frames=dataset.num_frames, frame_size=frame_size)
    model = VideoItemEncoder(backbone, dim=1).to(device).eval()
    table = np.full((dataset.num_items + 1, backbone.feature_dim), np.nan, dtype=np.float32)
    table[0] = 0.0
    failed = read_errors = 0
    transform = FrameTransform(frame_size, squash=squash, train=False)
    stream = ItemStream(item_store_for(dataset, cache or DataConfig()), transform, batch_size)
    for batch in item_loader(stream, num_workers, pin_memory=device.type == "cuda"):
        failed += len(batch["failed"])
        read_errors += len(batch["lost_items"])
        if len(batch["indices"]):
            features = model.features(batch["clips"].to(device)).float().cpu().numpy()
            table[batch["indices"].numpy()] = features
    encoded = int((~np.isnan(table[1:]).any(axis=1)).sum())
    description = {
        "encoder": encoder,
        "encoder_weights": weights,
        "frame_size": frame_size,
        "squash": squash,
        "dataset_root": dataset.root,
        "dataset_version": dataset.version,
        "items_encoded": encoded,
        "items_not_encoded": dataset.num_items - encoded,
        "item_decode_failures": failed,
        "item_read_errors": read_errors,
        "num_items": dataset.num_items,
        "feature_dim": backbone.feature_dim,
    }
    return table, description


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table, description = extract_features(
        args.data,
        args.encoder,
        args.encoder_weights,
        args.frame_size,
        args.squash,
        args.batch_size,
        device,
        allow_random_backbone=args.allow_random_backbone,
        num_workers=args.num_workers,
        cache=DataConfig(item_cache=args.item_cache, item_cache_max_gb=args.item_cache_max_gb),
    )
    output = Path(args.output).with_suffix(".npy")
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, table)
    output.with_suffix(".json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    print(f"{description['items_encoded']}/{description['num_items']} items -> {output} {table.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
