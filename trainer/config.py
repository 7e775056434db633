"""Training configuration: documented dataclasses and named presets.

A run is described by one :class:`TrainConfig`. Presets give the starting values
(``tiny`` for CPU tests and demos, ``paper`` for the MicroLens VideoRec setting,
``sasrec-ml`` for the standard MovieLens SASRec setting); command-line flags override
single fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from trainer.errors import UsageError

SELECTION_METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


@dataclass
class DataConfig:
    """Where the data comes from and how it is streamed."""

    data: str = ""
    """Dataset folder, its ``manifest.json``, or a dataset root holding ``LATEST`` (local, gs://, http(s)://)."""
    source: str = "shards"
    """``shards``: stream the train shards; ``sequences``: windows over every training interaction
    of ``sequences.parquet`` (id / frozen encoders only; see ``trainer.sequence_windows``)."""
    train_shards: str | None = None
    """Optional brace pattern / ``::``-separated URL list overriding the manifest's train shards."""
    batch_size: int = 32
    """Users per batch on each rank."""
    num_workers: int = 0
    """DataLoader worker processes per rank (0 = read in the training process)."""
    shuffle_shards: bool = True
    """Shuffle the shard order each epoch (seeded by ``seed`` and the epoch)."""
    shuffle_buffer: int = 256
    """Sample shuffle buffer size; 0 or 1 disables sample shuffling."""
    frame_size: int = 112
    """Side of the square frames given to the encoder."""
    squash: bool = False
    """Resize frames to ``frame_size`` ignoring aspect (the paper's code); else resize + crop."""
    augment: bool = True
    """Train-time random crop and horizontal flip (evaluation always centre-crops)."""
    decode_device: str = "cpu"
    """``cpu``: loader workers decode JPEGs; ``cuda``: the trainer decodes on the GPU with nvjpeg."""
    frames_from: str = "auto"
    """Where training reads item frames: ``store`` (the item shards, by offset: ``trainer.item_store``),
    ``samples`` (the frames embedded in train samples; ``embedded``-layout datasets only), or ``auto``
    (the dataset's layout: ``samples`` for ``embedded``, ``store`` for ``reference``)."""
    item_cache: str = ""
    """Folder caching remote item shards, shared by the machine's ranks and workers (``trainer.item_cache``);
    empty: ``$XDG_CACHE_HOME/videorec/item-shards`` (``~/.cache/videorec/item-shards``)."""
    item_cache_max_gb: float = 100.0
    """Size limit of ``item_cache``: least-recently-used shards no process is reading are evicted."""
    max_lost_fraction: float = 0.001
    """Stop the run once corrupt samples + failed shard reads exceed this fraction of the samples it reads."""


@dataclass
class ModelConfig:
    """VideoRec = item encoder (video / id / frozen features) + SASRec user encoder."""

    encoder: str = "tiny"
    """Item encoder: a video registry name (see ``trainer.models.encoder_registry``), ``id`` or ``frozen``."""
    encoder_weights: str | None = None
    """Pretrained backbone weights: a weights name (``KINETICS400_V1`` for torchvision nets,
    ``KINETICS400`` for pytorchvideo nets), read from the torch hub cache and never downloaded;
    a local state-dict file (``.pt`` / ``.pth`` / ``.pyth``); or a Hugging Face model folder (VideoMAE)."""
    allow_random_backbone: bool = False
    """Allow ``frozen`` / ``top-k`` on a backbone without pretrained weights (ablations, benchmarks)."""
    features: str | None = None
    """For ``frozen``: the ``.npy`` feature table written by ``videorec extract``."""
    freeze: str = "top-k"
    """Encoder freezing policy: ``frozen``, ``top-k`` (last ``trainable_blocks`` blocks train) or ``all``."""
    trainable_blocks: int = 2
    """Number of top encoder blocks that train under ``top-k``."""
    activation_checkpointing: bool = False
    """Recompute encoder block activations in the backward pass to save memory."""
    activation_budget_gb: float | None = None
    """Training encodes a step's clips in chunks whose saved activations fit this many GB, each chunk
    recomputed in the backward pass (one more encoder forward; batch-norm statistics per chunk); a
    step within the budget runs whole, as without it. None: 1 GB on the CPU, 40 % of the GPU's memory
    on CUDA. 0: never chunk."""
    dim: int = 512
    """Model width d: item embedding size and SASRec hidden size."""
    num_blocks: int = 2
    """SASRec transformer blocks."""
    num_heads: int = 2
    """SASRec attention heads."""
    ffn_dim: int = 2048
    """SASRec feed-forward width."""
    dropout: float = 0.1
    """Dropout in SASRec (embeddings, attention, feed-forward)."""
    max_seq_len: int = 10
    """Input sequence length L (the window holds L+1 items)."""


@dataclass
class OptimConfig:
    """AdamW with separate encoder / recommender groups, warmup then a cosine or constant schedule."""

    epochs: int = 10
    """Passes over the training shards."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides ``epochs`` when smaller)."""
    steps_per_epoch: int | None = None
    """Optimizer steps per epoch on each rank; default: every train sample once, ceil(train samples /
    batch) global batches over world * accumulation per step (``trainer.sample_order``), or
    train samples // (world * batch * accumulation) where train shards that embed frames are split
    between several readers. Given, it is counted on the world size the epoch runs on."""
    encoder_lr: float = 1e-4
    """Learning rate of the video/frozen encoder parameters."""
    encoder_weight_decay: float = 0.0
    """Weight decay of the encoder parameters."""
    lr: float = 1e-4
    """Learning rate of the recommender (SASRec, id embeddings, projection)."""
    weight_decay: float = 0.1
    """Weight decay of the recommender parameters."""
    grad_clip: float = 5.0
    """Clip the global gradient norm to this value (0 disables)."""
    schedule: str = "cosine"
    """``cosine`` (decay to ``lr * min_lr_ratio`` at the last step) or ``constant`` after warmup."""
    warmup_steps: int = 0
    """Linear warmup steps before the schedule."""
    min_lr_ratio: float = 0.0
    """Cosine decays to ``lr * min_lr_ratio``."""
    grad_accumulation: int = 1
    """Micro-batches per optimizer step."""
    amp: bool = True
    """bf16 autocast on CUDA for training steps and item encoding (ignored on CPU); scores stay fp32."""


@dataclass
class LossConfig:
    """Next-item softmax loss."""

    candidates: str = "in-batch"
    """``in-batch``: all items in the batch (the paper); ``full``: every item (id encoder only)."""
    logq: bool = True
    """Subtract log popularity from in-batch logits (sampling-bias correction)."""
    gather_negatives: bool = False
    """Add the other DDP ranks' batch items as negatives."""


@dataclass
class TrainConfig:
    """One training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    output: str = "runs/videorec"
    """Run folder: checkpoints, metrics.jsonl, results.json."""
    seed: int = 0
    """Seeds model init, shard/sample shuffles and augmentation."""
    eval_batch_size: int = 256
    """Users per evaluation batch (and items per batch of an ID or frozen-feature table)."""
    item_batch_size: int = 32
    """Clips per forward pass when evaluation encodes video items: bounds the encoder's activation
    memory apart from ``eval_batch_size`` (the paper preset scores 1,024 users a batch)."""
    eval_every_epoch: bool = True
    """Evaluate on validation after every epoch (keeps the best checkpoint)."""
    selection_metric: str = "NDCG@10"
    """Validation metric that picks ``best.pt`` (one of ``SELECTION_METRICS``)."""
    checkpoint_every: int = 0
    """Also checkpoint every N optimizer steps (0: only at epoch ends)."""
    log_every: int = 1
    """Write a metrics.jsonl line every N optimizer steps."""
    progress: bool = True
    """Show a progress bar (rank 0)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return cls(
            data=DataConfig(**values["data"]),
            model=ModelConfig(**values["model"]),
            optim=OptimConfig(**values["optim"]),
            loss=LossConfig(**values["loss"]),
            **{k: v for k, v in values.items() if k not in ("data", "model", "optim", "loss")},
        )

    def validate(self) -> None:
        """Refuse flags that cannot train or do not fit together, before anything is read: no epochs
        or steps, a learning rate that is not a finite positive number, an empty batch, heads that do
        not divide the width, a choice that names nothing, a video encoder with a source or loss that
        has no frames. (The encoder's name and the paths are checked by ``trainer.train``.)

        Raises:
            UsageError: the first such setting, with the flag that sets it.
        """
        optim, data, model = self.optim, self.data, self.model
        counts = [
            ("--epochs", optim.epochs),
            ("--batch-size", data.batch_size),
            ("--frame-size", data.frame_size),
            ("--eval-batch-size", self.eval_batch_size),
            ("--item-batch-size", self.item_batch_size),
            ("--grad-accumulation", optim.grad_accumulation),
            ("--num-heads", model.num_heads),
            ("--dim", model.dim),
        ]
        counts += [("--max-steps", optim.max_steps)] if optim.max_steps is not None else []
        counts += [("--steps-per-epoch", optim.steps_per_epoch)] if optim.steps_per_epoch is not None else []
        for flag, value in counts:
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, got {value}; a run with it trains nothing")
        for flag, value in (("--lr", optim.lr), ("--encoder-lr", optim.encoder_lr)):
            if not math.isfinite(value) or value <= 0:
                raise UsageError(f"{flag} must be a finite number above 0, got {value}")
        for flag, value in (
            ("--weight-decay", optim.weight_decay),
            ("--encoder-weight-decay", optim.encoder_weight_decay),
            ("--grad-clip", optim.grad_clip),
            ("--dropout", model.dropout),
            ("--max-lost-fraction", data.max_lost_fraction),
            ("--item-cache-max-gb", data.item_cache_max_gb),
            *(
                [("--activation-budget-gb", model.activation_budget_gb)]
                if model.activation_budget_gb is not None
                else []
            ),
        ):
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{flag} must be a finite number of at least 0, got {value}")
        if model.dim % model.num_heads:
            raise UsageError(
                f"--num-heads {model.num_heads} does not divide the width --dim {model.dim}; choose a divisor "
                f"of {model.dim}"
            )
        self._validate_choices()

    def _validate_choices(self) -> None:
        """Refuse a ``--schedule``, ``--source`` or ``--selection-metric`` that names nothing, and a
        video encoder (``--encoder`` other than ``id`` / ``frozen``) with ``--source sequences`` or
        ``--candidates full``."""
        if self.optim.schedule not in ("cosine", "constant"):
            raise UsageError(f"unknown --schedule {self.optim.schedule!r}; choose cosine or constant")
        if self.data.source not in ("shards", "sequences"):
            raise UsageError(f"unknown --source {self.data.source!r}; choose shards or sequences")
        if self.selection_metric not in SELECTION_METRICS:
            raise UsageError(
                f"unknown --selection-metric {self.selection_metric!r}; choose one of "
                f"{', '.join(SELECTION_METRICS)}"
            )
        video_encoder = self.model.encoder not in ("id", "frozen")
        if self.loss.candidates == "full" and video_encoder:
            raise UsageError(
                "--candidates full needs an id or frozen encoder (video items are encoded per batch)"
            )
        if self.data.source == "sequences" and video_encoder:
            raise UsageError("--source sequences has no frames; use it with the id or frozen encoder")


def _tiny() -> TrainConfig:
    # Trained to convergence on synth data of 300-1,000 users and 100-300 items (docs/TRAINING.md,
    # "Robustness across configurations"): 5 epochs at lr 1e-3 stopped every arm while its validation
    # HR@10 was still climbing (the id arm most: 0.23 -> 0.45 test HR@10 at 600 users, 200 items), so
    # which arm won depended on the seed and size. 20 epochs at 3e-3 reach the validation plateau;
    # 16 px frames (stored frames are downscaled) and no crop/flip train the tiny CNN better and
    # cheaper than 32 px with augmentation (MicroLens does not augment either; --augment turns it on).
    return TrainConfig(
        data=DataConfig(batch_size=16, frame_size=16, shuffle_buffer=64, augment=False),
        model=ModelConfig(encoder="tiny", freeze="all", dim=32, ffn_dim=64, dropout=0.1, max_seq_len=10),
        optim=OptimConfig(epochs=20, encoder_lr=3e-3, lr=3e-3, weight_decay=0.01, warmup_steps=5),
        eval_batch_size=64,
    )


def _paper() -> TrainConfig:
    """MicroLens's VideoRec with SASRec (github.com/westlake-repl/MicroLens, Code/VideoRec/SASRec).

    Each field names its source there; docs/TRAINING.md has the same table and every place
    where this preset differs on purpose (classifier head, bf16, no SyncBatchNorm, ...).
    """
    return TrainConfig(
        data=DataConfig(
            batch_size=120,  # run_video.py: "slowfast-50: ... 270/120" (topT, batch 120 per GPU)
            frame_size=224,  # run_video.py image_resize = 224; main.py views clips as (frame_no, 3, 224, 224)
            squash=True,  # their frames are resized to 224 x 224 ignoring aspect (../shared/BRIEF.md)
            augment=False,  # their frames are read from LMDB as stored: no crop or flip
            num_workers=8,  # throughput only (theirs: parameters.py num_workers=2)
        ),
        model=ModelConfig(
            encoder="slowfast_r50",  # main.py: torch.hub pytorchvideo slowfast_r50, pretrained=True
            encoder_weights="KINETICS400",  # ... i.e. pytorchvideo's Kinetics-400 SLOWFAST_8x8_R50.pyth
            freeze="top-k",  # run_video.py: video_freeze_paras_before 270 for slowfast-50 "topT":
            trainable_blocks=1,  # parameters 0..269 are blocks.0-3, so blocks.4 (res5) trains
            dim=512,  # run_video.py embedding_dim_list = [512]
            num_blocks=2,  # parameters.py transformer_block = 2
            num_heads=2,  # parameters.py num_attention_heads = 2
            ffn_dim=2048,  # 4 x d (../shared/BRIEF.md: FFN 2048)
            dropout=0.1,  # run_video.py drop_rate = 0.1
            max_seq_len=10,  # run_video.py max_seq_len_list = [10]
        ),
        optim=OptimConfig(
            epochs=50,  # run_video.py epoch = 50
            encoder_lr=1e-4,  # run_video.py video_fine_tune_lr_list = [1e-4]
            encoder_weight_decay=0.0,  # main.py: the video_net_params group has weight_decay 0
            lr=1e-4,  # run_video.py lr_list = [1e-4]
            weight_decay=0.1,  # run_video.py weight_decay = 0.1 (the recsys_params group)
            grad_clip=5.0,  # main.py clip_grad_norm_(max_norm=5)
            schedule="constant",  # run_video.py step_schedule_with_warmup, gap 1, alpha 1: lr x 1 per epoch
            warmup_steps=0,  # main.py warmup_steps = 0
            amp=True,  # main.py autocast(enabled=True) + GradScaler (fp16 there, bf16 here)
        ),
        loss=LossConfig(candidates="in-batch", logq=True),  # in-batch softmax, logQ, own items masked
        selection_metric="HR@10",  # main.py keeps the epoch with the best validation Hit@10
    )


def _sasrec_ml() -> TrainConfig:
    # every training interaction is a target (windows over sequences.parquet), full softmax like
    # RecBole's CE loss; 30 epochs of batch 64 (~2.5 min on 2 CPU cores) match RecBole's SASRec on
    # ml-100k within 5% (benchmarks/recbole_ml100k.py); 8 epochs stop ~25% short of it
    return TrainConfig(
        data=DataConfig(source="sequences", batch_size=64, shuffle_buffer=4096),
        model=ModelConfig(
            encoder="id", dim=64, num_blocks=2, num_heads=2, ffn_dim=256, dropout=0.2, max_seq_len=50
        ),
        optim=OptimConfig(epochs=30, lr=1e-3, weight_decay=0.0, encoder_lr=1e-3, grad_clip=5.0),
        loss=LossConfig(candidates="full", logq=False),
        eval_batch_size=1024,
    )


PRESETS = {"tiny": _tiny, "paper": _paper, "sasrec-ml": _sasrec_ml}


def preset(name: str) -> TrainConfig:
    """A fresh copy of the named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()
