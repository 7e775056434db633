"""``videorec train`` / ``torchrun -m trainer.train``: train VideoRec on a dataset version.

Examples::

    videorec train --data runs/data --preset tiny --encoder tiny --output runs/tiny
    torchrun --nproc_per_node=8 -m trainer.train --data gs://bucket/ds --preset paper --output runs/paper
    videorec train --data DS --preset paper --encoder r3d_18 --encoder-weights KINETICS400_V1 --output R

Pretrained weights are read from the torch hub cache, a local file or a model folder and
never downloaded: missing weights stop the run before any data is read, with the command
that fetches them (see ``trainer.models.video_encoders.resolve_weights``).

Under torchrun (``WORLD_SIZE`` > 1) each process joins a DDP group: NCCL on GPUs, gloo
on CPUs. A run folder that already holds ``checkpoints/last.pt`` is resumed (same
dataset version, same data position) unless ``--no-resume`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from trainer import checkpoint
from trainer.config import PRESETS, TrainConfig, preset
from trainer.dataset import load_dataset
from trainer.models.encoder_registry import ENCODERS, resolve_weights

# flag -> (config section, field, type)
OVERRIDES: dict[str, tuple[str, str, type]] = {
    "--source": ("data", "source", str),
    "--train-shards": ("data", "train_shards", str),
    "--batch-size": ("data", "batch_size", int),
    "--num-workers": ("data", "num_workers", int),
    "--shuffle-buffer": ("data", "shuffle_buffer", int),
    "--frame-size": ("data", "frame_size", int),
    "--decode-device": ("data", "decode_device", str),
    "--max-lost-fraction": ("data", "max_lost_fraction", float),
    "--encoder": ("model", "encoder", str),
    "--encoder-weights": ("model", "encoder_weights", str),
    "--features": ("model", "features", str),
    "--freeze": ("model", "freeze", str),
    "--trainable-blocks": ("model", "trainable_blocks", int),
    "--dim": ("model", "dim", int),
    "--num-blocks": ("model", "num_blocks", int),
    "--num-heads": ("model", "num_heads", int),
    "--ffn-dim": ("model", "ffn_dim", int),
    "--dropout": ("model", "dropout", float),
    "--max-seq-len": ("model", "max_seq_len", int),
    "--epochs": ("optim", "epochs", int),
    "--max-steps": ("optim", "max_steps", int),
    "--steps-per-epoch": ("optim", "steps_per_epoch", int),
    "--lr": ("optim", "lr", float),
    "--weight-decay": ("optim", "weight_decay", float),
    "--encoder-lr": ("optim", "encoder_lr", float),
    "--encoder-weight-decay": ("optim", "encoder_weight_decay", float),
    "--grad-clip": ("optim", "grad_clip", float),
    "--schedule": ("optim", "schedule", str),
    "--warmup-steps": ("optim", "warmup_steps", int),
    "--grad-accumulation": ("optim", "grad_accumulation", int),
    "--candidates": ("loss", "candidates", str),
    "--seed": ("", "seed", int),
    "--eval-batch-size": ("", "eval_batch_size", int),
    "--selection-metric": ("", "selection_metric", str),
    "--checkpoint-every": ("", "checkpoint_every", int),
    "--log-every": ("", "log_every", int),
}
SWITCHES: dict[str, tuple[str, str, bool]] = {
    "--no-shard-shuffle": ("data", "shuffle_shards", False),
    "--squash": ("data", "squash", True),
    "--no-augment": ("data", "augment", False),
    "--activation-checkpointing": ("model", "activation_checkpointing", True),
    "--allow-random-backbone": ("model", "allow_random_backbone", True),
    "--no-amp": ("optim", "amp", False),
    "--no-logq": ("loss", "logq", False),
    "--gather-negatives": ("loss", "gather_negatives", True),
    "--no-eval-every-epoch": ("", "eval_every_epoch", False),
    "--no-progress": ("", "progress", False),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videorec train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder, manifest.json or root with LATEST")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="starting configuration")
    parser.add_argument(
        "--output", required=True, help="run folder (checkpoints, metrics.jsonl, results.json)"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="start over even if the run folder has a checkpoint"
    )
    for flag, (section, field, kind) in OVERRIDES.items():
        parser.add_argument(flag, type=kind, default=None, help=f"override {section or 'run'}.{field}")
    for flag, (section, field, value) in SWITCHES.items():
        parser.add_argument(flag, action="store_true", help=f"set {section or 'run'}.{field}={value}")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset with the command line's overrides applied."""
    config = preset(args.preset)
    config.data.data, config.output = args.data, args.output
    for flag, (section, field, _) in OVERRIDES.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            setattr(getattr(config, section) if section else config, field, value)
    for flag, (section, field, value) in SWITCHES.items():
        if getattr(args, flag[2:].replace("-", "_")):
            setattr(getattr(config, section) if section else config, field, value)
    return config


def init_distributed() -> tuple[torch.device, int, int]:
    """(device, rank, world size); joins the torchrun process group when ``WORLD_SIZE`` > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size == 1:
        return device, 0, 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), world_size


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    from trainer.trainer import Trainer  # after logging is configured

    device, rank, world_size = init_distributed()
    try:
        last = Path(config.output) / "checkpoints" / checkpoint.LAST
        resume = last.exists() and not args.no_resume
        if not resume and config.model.encoder in ENCODERS and config.model.encoder_weights:
            resolve_weights(config.model.encoder, config.model.encoder_weights)  # fail before reading data
        state = checkpoint.load(last) if resume else None
        # a resumed run keeps the dataset version it started with, even if LATEST moved since, and
        # rebuilds its encoder from the checkpoint (which holds the pretrained weights it started from)
        dataset = load_dataset(state["dataset_root"] if resume else config.data.data)
        trainer = Trainer(
            config,
            dataset,
            device=device,
            rank=rank,
            world_size=world_size,
            encoder_spec=state["encoder_spec"] if resume else None,
        )
        del state
        if resume:
            trainer.resume(last)
            logging.info("resumed %s at step %d", last, trainer.step)
        trainer.train()
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
