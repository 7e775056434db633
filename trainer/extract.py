"""``videorec extract``: item features from a frozen video backbone, for the ``frozen`` baseline.

Writes ``OUTPUT.npy`` (float32 ``[num_items + 1, F]``, row 0 = padding, rows of items
without decodable frames stay zero) and ``OUTPUT.json`` describing how it was made.
The table is read back with ``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from trainer.data import item_batches
from trainer.dataset import load_dataset
from trainer.frames import FrameTransform
from trainer.models.video_encoders import ENCODERS, VideoItemEncoder, build_backbone


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videorec extract", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder, manifest.json or root with LATEST")
    parser.add_argument("--encoder", required=True, choices=sorted(ENCODERS), help="video backbone")
    parser.add_argument("--encoder-weights", help="local .pt state dict or torchvision weights name")
    parser.add_argument("--frame-size", type=int, default=112, help="square frame side given to the backbone")
    parser.add_argument("--squash", action="store_true", help="resize ignoring aspect instead of centre crop")
    parser.add_argument("--batch-size", type=int, default=32, help="items per forward pass")
    parser.add_argument("--output", required=True, help="feature table path (.npy)")
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
) -> tuple[np.ndarray, dict]:
    """(feature table ``[num_items + 1, F]``, description) for every item of the dataset."""
    dataset = load_dataset(data)
    if not dataset.has_frames:
        raise ValueError(f"{dataset.root}: dataset has no frames to extract features from")
    backbone = build_backbone(encoder, weights)
    model = VideoItemEncoder(backbone, dim=1).to(device).eval()
    table = np.zeros((dataset.num_items + 1, backbone.feature_dim), dtype=np.float32)
    encoded = 0
    transform = FrameTransform(frame_size, squash=squash, train=False)
    for indices, clips in item_batches(dataset.shard_urls("items"), transform, batch_size):
        table[indices.numpy()] = model.features(clips.to(device)).float().cpu().numpy()
        encoded += len(indices)
    description = {
        "encoder": encoder,
        "encoder_weights": weights,
        "frame_size": frame_size,
        "squash": squash,
        "dataset_root": dataset.root,
        "dataset_version": dataset.version,
        "items_encoded": encoded,
        "num_items": dataset.num_items,
        "feature_dim": backbone.feature_dim,
    }
    return table, description


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table, description = extract_features(
        args.data, args.encoder, args.encoder_weights, args.frame_size, args.squash, args.batch_size, device
    )
    output = Path(args.output).with_suffix(".npy")
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, table)
    output.with_suffix(".json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    print(f"{description['items_encoded']}/{description['num_items']} items -> {output} {table.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
