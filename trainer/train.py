"""``videorec train`` / ``torchrun -m trainer.train``: train VideoRec on a dataset version.

Examples::

    videorec train --data runs/data --preset tiny --encoder tiny --output runs/tiny
    torchrun --nproc_per_node=8 -m trainer.train --data gs://bucket/ds --preset paper --output runs/paper
    videorec train --data DS --preset paper --encoder r3d_18 --encoder-weights KINETICS400_V1 --output R

Pretrained weights are read from the torch hub cache, a local file or a model folder and
never downloaded: missing weights stop the run before any data is read, with the command
that fetches them (see ``trainer.models.encoder_registry.resolve_weights``). A preset's weights
name belongs to its own encoder: with another ``--encoder`` the run takes that encoder's own
default (Kinetics) weights, or none if it has no named weights; ``--encoder-weights none`` takes
a preset's weights off.

Under torchrun (``WORLD_SIZE`` > 1) each process joins a DDP group: NCCL on GPUs, gloo
on CPUs. A run folder that already holds ``checkpoints/last.pt`` is resumed (same
dataset version, same data position) unless ``--no-resume`` is given; a checkpoint of
another dataset version than ``--data`` is refused (a dataset root whose ``LATEST`` moved
on since the run started resumes on the version the run started with).

Refusals (``trainer.errors``) print one line, ``videorec train: error: ...``, with no
traceback: exit 2 for bad flags (no epochs or steps, a learning rate that is not a finite positive
number, an empty batch...), data, weights or checkpoints; 4 when more samples were lost to damaged
data than ``--max-lost-fraction`` allows, or the loss became NaN or infinite (the run stops before
the step that would write it into the weights).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from dataformat.format import LATEST_FILE, version_manifest_path
from trainer import checkpoint, storage
from trainer.config import PRESETS, TrainConfig, preset
from trainer.data import expand_shard_urls
from trainer.dataset import DatasetInfo, explain_frame_size, load_dataset, load_manifest, resolve_manifest_url
from trainer.errors import DatasetError, UsageError, run_command
from trainer.models.encoder_registry import ENCODERS, resolve_weights
from trainer.models.encoder_weights import MissingWeightsError
from trainer.progress import METRICS_FILE

log = logging.getLogger(__name__)

# flag -> (config section, field, type)
OVERRIDES: dict[str, tuple[str, str, type]] = {
    "--source": ("data", "source", str),
    "--train-shards": ("data", "train_shards", str),
    "--batch-size": ("data", "batch_size", int),
    "--num-workers": ("data", "num_workers", int),
    "--shuffle-buffer": ("data", "shuffle_buffer", int),
    "--frame-size": ("data", "frame_size", int),
    "--decode-device": ("data", "decode_device", str),
    "--frames-from": ("data", "frames_from", str),
    "--item-cache": ("data", "item_cache", str),
    "--item-cache-max-gb": ("data", "item_cache_max_gb", float),
    "--max-lost-fraction": ("data", "max_lost_fraction", float),
    "--encoder": ("model", "encoder", str),
    "--encoder-weights": ("model", "encoder_weights", str),
    "--features": ("model", "features", str),
    "--freeze": ("model", "freeze", str),
    "--trainable-blocks": ("model", "trainable_blocks", int),
    "--activation-budget-gb": ("model", "activation_budget_gb", float),
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
    "--item-batch-size": ("", "item_batch_size", int),
    "--selection-metric": ("", "selection_metric", str),
    "--checkpoint-every": ("", "checkpoint_every", int),
    "--log-every": ("", "log_every", int),
}
SWITCHES: dict[str, tuple[str, str, bool]] = {
    "--no-shard-shuffle": ("data", "shuffle_shards", False),
    "--squash": ("data", "squash", True),
    "--no-augment": ("data", "augment", False),
    "--augment": ("data", "augment", True),
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
        "--no-resume",
        action="store_true",
        help="start over even if the run folder has a checkpoint (of any dataset version): its "
        "checkpoints, metrics.jsonl and results.json are replaced",
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
    model, own = config.model, preset(args.preset).model
    if args.encoder_weights is None and model.encoder_weights and model.encoder != own.encoder:
        # the preset's weights name is its own encoder's: another encoder takes its own Kinetics weights
        named = ENCODERS[model.encoder].weights if model.encoder in ENCODERS else {}
        model.encoder_weights = "DEFAULT" if named else None
    if str(model.encoder_weights).lower() == "none":
        model.encoder_weights = None  # --encoder-weights none: a random backbone, whatever the preset says
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


def check_names(config: TrainConfig) -> None:
    """Refuse an ``--encoder`` that names nothing, before anything is read."""
    known = [*ENCODERS, "id", "frozen"]
    if config.model.encoder not in known:
        raise UsageError(f"unknown --encoder {config.model.encoder!r}; choose one of {', '.join(known)}")


def check_paths(config: TrainConfig) -> None:
    """Refuse an ``--output`` that is a file and ``--train-shards`` that are not there, before anything
    is read (the other flags are checked by :meth:`TrainConfig.validate`).

    Raises:
        UsageError: the first such flag.
    """
    data = config.data
    if Path(config.output).is_file():
        raise UsageError(f"--output {config.output} is a file; give a run folder")
    if data.train_shards:
        urls = expand_shard_urls(data.train_shards)
        missing = [url for url in urls if not storage.exists(url)]
        if not urls or missing:
            example = f" ({missing[0]} does not exist)" if missing else ""
            raise UsageError(
                f"--train-shards {data.train_shards!r} names shards that are not there{example}; give "
                "shard paths or URLs, or a brace pattern such as train/train-{000000..000009}.tar (no globs)"
            )


def check_resumable(state: dict, config: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume a checkpoint trained with another encoder than ``--encoder``.

    Raises:
        UsageError: the encoders differ (the fix: ``--no-resume``, or another ``--output``).
    """
    trained = (state.get("config") or {}).get("model", {}).get("encoder")
    if trained is not None and trained != config.model.encoder:
        raise UsageError(
            f"run folder {run_dir} holds a checkpoint of --encoder {trained!r}, but --encoder is "
            f"{config.model.encoder!r}; pass --no-resume to start over there, or choose another --output"
        )


def dataset_to_resume(data: str, state: dict, run_dir: Path) -> DatasetInfo:
    """The dataset version the checkpoint ``state`` was trained on, as ``--data`` names it.

    ``--data`` must resolve to that version, or be a dataset root that still holds it (``LATEST``
    moved on since the run started: the run continues on its own version).

    Raises:
        DatasetError: ``--data`` is another dataset version (the fix: ``--no-resume``, or another ``--output``).
    """
    version = str(state["dataset_version"])
    manifest_url = resolve_manifest_url(data)
    current = str(load_manifest(manifest_url).get("dataset_version", ""))
    if current == version:
        return load_dataset(manifest_url)
    pinned = storage.join_url(data, version_manifest_path(version))
    if storage.exists(storage.join_url(data, LATEST_FILE)) and storage.exists(pinned):
        log.info(
            "%s: LATEST is now version %s; the run goes on with version %s it started with",
            data,
            current,
            version,
        )
        return load_dataset(pinned)
    raise DatasetError(
        f"run folder {run_dir} holds a checkpoint of dataset version {version!r}, but --data {data} is "
        f"version {current!r}; pass --no-resume to start over there, or choose another --output"
    )


RUN_OUTPUTS = (
    "results.json",
    METRICS_FILE,
    f"checkpoints/{checkpoint.LAST}",
    f"checkpoints/{checkpoint.BEST}",
)
"""What a run writes into its folder (``--no-resume`` removes these first)."""


def start_over(run_dir: Path) -> None:
    """Remove an earlier run's outputs from ``run_dir`` (``--no-resume``)."""
    removed = [name for name in RUN_OUTPUTS if (run_dir / name).is_file()]
    for name in removed:
        (run_dir / name).unlink()
    if removed:
        log.info("--no-resume: removed %s from %s", ", ".join(removed), run_dir)


def train(args: argparse.Namespace) -> int:
    """Train as ``args`` say (see the module docstring); raises ``trainer.errors`` refusals."""
    config = config_from_args(args)
    check_names(config)
    config.validate()
    check_paths(config)
    from trainer.run_eval import RESULTS_FILE
    from trainer.trainer import Trainer  # after logging is configured

    device, rank, world_size = init_distributed()
    try:
        run_dir = Path(config.output)
        last = run_dir / "checkpoints" / checkpoint.LAST
        resume = last.exists() and not args.no_resume
        if not resume and config.model.encoder in ENCODERS and config.model.encoder_weights:
            try:  # fail before reading data
                resolve_weights(config.model.encoder, config.model.encoder_weights)
            except ValueError as err:  # an unknown weights name, or a folder for an encoder that takes a file
                raise UsageError(f"{err}; or --encoder-weights none for a random backbone") from None
        state = None
        if resume:
            # the run rebuilds its encoder from the checkpoint (which holds the pretrained weights it
            # started from) and keeps the dataset version it started with
            state = checkpoint.read(last, checkpoint.RESUME_KEYS, "pass --no-resume to start over")
            check_resumable(state, config, run_dir)
            dataset = dataset_to_resume(config.data.data, state, run_dir)
        else:
            dataset = load_dataset(config.data.data)
            if args.no_resume and rank == 0:
                start_over(run_dir)
        frames_note = explain_frame_size(dataset, config.data.frame_size, config.data.squash)
        if frames_note and config.model.encoder not in ("id", "frozen"):  # these read no frames
            line, upscaled = frames_note
            (log.warning if upscaled else log.info)(line)
        trainer = Trainer(
            config,
            dataset,
            device=device,
            rank=rank,
            world_size=world_size,
            encoder_spec=state["encoder_spec"] if resume else None,
        )
        if resume:
            trainer.resume(state)
            log.info("resumed from step %d (%s)", trainer.step, last)
        del state
        trainer.train()
        if rank == 0:
            print(f"results: {run_dir / RESULTS_FILE}")
            print(f"metrics: {run_dir / METRICS_FILE}")
            print(f"checkpoints: {last.parent / checkpoint.BEST} (best validation), {last} (last step)")
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("videorec train", lambda: train(args), also=(MissingWeightsError,))


if __name__ == "__main__":
    sys.exit(main())
