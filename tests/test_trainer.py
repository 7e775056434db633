"""Trainer pieces with real torch steps: loss, encoders, freezing, configs, and short training runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.fixtures_dataset import rewrite_shard, solid_frames, write_dataset
from trainer import checkpoint
from trainer.config import ModelConfig, preset
from trainer.extract import main as extract_main
from trainer.loss import full_softmax_loss, in_batch_softmax_loss, log_popularity
from trainer.models.encoder_registry import ENCODERS, build_backbone
from trainer.models.video_item_encoder import VideoItemEncoder, apply_freezing
from trainer.models.videorec import build_videorec
from trainer.train import build_parser, config_from_args
from trainer.train import main as train_main


def test_in_batch_loss_masks_own_window_items_except_the_label():
    torch.manual_seed(0)
    items = torch.tensor([[1, 2, 3], [2, 4, 0]])
    candidates = torch.tensor([1, 2, 3, 4])
    embeddings = torch.randn(4, 8)
    states = torch.randn(2, 2, 8)
    log_q = log_popularity(torch.tensor([0, 5, 1, 1, 3]))
    loss = in_batch_softmax_loss(states, items, candidates, embeddings, log_q)

    def term(state, allowed, label):  # allowed: candidate positions left unmasked
        logits = embeddings[allowed] @ state - log_q[candidates[allowed]]
        return -(logits[allowed.index(label)] - torch.logsumexp(logits, 0))

    # user 0 (window 1,2,3): target 2 sees {2, 4}; target 3 sees {3, 4}; user 1 (window 2,4): target 4 sees {1,3,4}
    expected = (
        term(states[0, 0], [1, 3], 1) + term(states[0, 1], [2, 3], 2) + term(states[1, 0], [0, 2, 3], 3)
    ) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_in_batch_loss_ignores_duplicate_and_empty_candidate_slots():
    torch.manual_seed(1)
    items = torch.tensor([[1, 2]])
    states, embeddings = torch.randn(1, 1, 4), torch.randn(3, 4)
    base = in_batch_softmax_loss(states, items, torch.tensor([1, 2, 3]), embeddings)
    padded = in_batch_softmax_loss(
        states, items, torch.tensor([1, 2, 3, 2, 0]), torch.cat([embeddings, torch.randn(2, 4)])
    )
    assert padded.item() == pytest.approx(base.item(), rel=1e-6)


def test_full_softmax_loss_is_cross_entropy_over_all_items():
    torch.manual_seed(2)
    items = torch.tensor([[3, 1, 0]])
    table, states = torch.randn(5, 4), torch.randn(1, 2, 4)
    logits = states[0, 0] @ table[1:].T
    expected = -(logits[0] - torch.logsumexp(logits, 0))
    assert full_softmax_loss(states, items, table).item() == pytest.approx(expected.item(), rel=1e-5)


def test_every_registered_backbone_lists_disjoint_blocks_that_top_k_freezing_acts_on():
    for name in ENCODERS:
        backbone = build_backbone(name)
        blocks = [backbone.module.get_submodule(block) for block in backbone.block_names]
        assert blocks, f"{name}: no blocks"
        owned = [{id(p) for p in block.parameters()} for block in blocks]
        assert all(owned), f"{name}: a block without parameters cannot be trained or frozen"
        for i, first in enumerate(owned):  # no block is (or holds) another
            for second in owned[i + 1 :]:
                assert not first & second, f"{name}: blocks share parameters"
        apply_freezing(backbone, "top-k", 1)
        trainable = {id(p) for p in backbone.module.parameters() if p.requires_grad}
        assert trainable == owned[-1], f"{name}: top-1 freezing must train exactly the last block"


@pytest.mark.parametrize("name", ["tiny", "r3d_18", "resnet18"])
def test_video_encoders_embed_uint8_clips(name):
    encoder = VideoItemEncoder(build_backbone(name), dim=16).eval()
    clips = torch.randint(0, 255, (2, 3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert encoder(torch.tensor([1, 2]), clips).shape == (2, 16)


def test_freezing_policies():
    backbone = build_backbone("r3d_18")
    apply_freezing(backbone, "top-k", 1)
    trainable = {n.split(".")[0] for n, p in backbone.module.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    backbone = build_backbone("tiny")
    apply_freezing(backbone, "frozen", 0)
    assert not any(p.requires_grad for p in backbone.module.parameters())


def test_activation_checkpointing_gives_the_same_gradients():
    clips = torch.randint(0, 255, (2, 3, 3, 16, 16), dtype=torch.uint8)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        encoder = VideoItemEncoder(build_backbone("tiny"), dim=8, activation_checkpointing=checkpointing)
        encoder(torch.tensor([1, 2]), clips).square().sum().backward()
        grads.append(encoder.projection.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_presets_and_overrides():
    paper = preset("paper")  # MicroLens Code/VideoRec/SASRec, see docs/TRAINING.md
    assert (paper.model.num_blocks, paper.model.num_heads, paper.model.dim, paper.model.ffn_dim) == (
        2,
        2,
        512,
        2048,
    )
    assert (paper.model.dropout, paper.model.max_seq_len, paper.optim.grad_clip) == (0.1, 10, 5.0)
    assert (
        paper.optim.encoder_lr,
        paper.optim.encoder_weight_decay,
        paper.optim.lr,
        paper.optim.weight_decay,
    ) == (1e-4, 0.0, 1e-4, 0.1)
    assert (paper.optim.epochs, paper.optim.schedule, paper.optim.warmup_steps, paper.optim.amp) == (
        50,
        "constant",
        0,
        True,
    )
    assert (paper.loss.candidates, paper.loss.logq, paper.selection_metric) == ("in-batch", True, "HR@10")
    assert (paper.data.frame_size, paper.data.squash) == (224, True)
    assert (paper.model.encoder, paper.model.encoder_weights) == ("slowfast_r50", "KINETICS400")
    ml = preset("sasrec-ml")
    assert (ml.model.max_seq_len, ml.model.dim, ml.model.num_blocks, ml.model.num_heads) == (50, 64, 2, 2)
    assert (ml.model.dropout, ml.optim.lr, ml.model.encoder) == (0.2, 1e-3, "id")
    args = build_parser().parse_args(
        [
            "--data",
            "d",
            "--output",
            "o",
            "--preset",
            "paper",
            "--encoder",
            "mc3_18",
            "--lr",
            "0.5",
            "--no-logq",
            "--squash",
        ]
    )
    config = config_from_args(args)
    assert (config.model.encoder, config.optim.lr, config.loss.logq, config.data.squash) == (
        "mc3_18",
        0.5,
        False,
        True,
    )
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def _shifted_sequences(num_users: int, num_items: int) -> dict[str, list[str]]:
    """User u watches u, u+1, u+2, ... (mod num_items): the next item is always the current one + 1."""
    return {str(u): [str((u + t) % num_items + 1) for t in range(8)] for u in range(num_users)}


@pytest.mark.parametrize("source", ["shards", "sequences"])
def test_id_sasrec_learns_a_deterministic_next_item_rule(tmp_path, source):
    data = write_dataset(tmp_path / "ds", _shifted_sequences(64, 30), max_seq_len=5)
    run = tmp_path / "run"
    flags = "--preset tiny --encoder id --epochs 20 --lr 0.01 --batch-size 16 --no-progress --source"
    train_main(["--data", str(data), "--output", str(run), *flags.split(), source])
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["HR@10"] > 0.9
    assert results["dataset_version"] == "test-v1"


def test_tiny_video_run_writes_checkpoints_metrics_and_results(tmp_path):
    data = write_dataset(
        tmp_path / "ds", _shifted_sequences(24, 12), frames=solid_frames(12, 2), max_seq_len=5
    )
    run = tmp_path / "run"
    train_main(
        [
            "--data",
            str(data),
            "--preset",
            "tiny",
            "--output",
            str(run),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--frame-size",
            "8",
            "--no-progress",
        ]
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records].count("train") == 6
    assert [r.get("split") for r in records if r["type"] == "eval"] == ["valid", "valid", "test"]
    assert all(math.isfinite(r["loss"]) for r in records if r["type"] == "train")
    state = checkpoint.load(run / "checkpoints" / "last.pt")  # weights_only=True
    assert state["step"] == 6 and state["position"]["epoch"] == 2
    assert state["dataset_version"] == "test-v1"
    results = json.loads((run / "results.json").read_text())
    overall = {"HR@10", "HR@20", "NDCG@10", "NDCG@20", "users"}
    subsets = {f"{name}/{subset}" for name in overall for subset in ("rare", "warm", "new")}
    assert set(results["test"]) == overall | subsets | {"targets_not_encoded"}
    assert results["test"]["users/warm"] + results["test"]["users/new"] == results["test"]["users"]
    assert set(results["popularity_test"]) == set(results["test"])
    assert results["items"]["items_encoded"] == 12 and results["items"]["items_not_encoded"] == 0
    assert results["lost"]["skipped_samples"] == 0 and results["lost"]["failed_reads"] == 0
    evals = [r for r in records if r["type"] == "eval"]
    assert all(r["encode_items_per_s"] > 0 and r["items_encoded"] == 12 for r in evals)


def test_frozen_baseline_uses_extracted_features(tmp_path):
    data = write_dataset(
        tmp_path / "ds", _shifted_sequences(16, 10), frames=solid_frames(12, 2), max_seq_len=5
    )
    features = tmp_path / "features.npy"
    assert (
        extract_main(
            [
                "--data",
                str(data),
                "--encoder",
                "tiny",
                "--allow-random-backbone",
                "--frame-size",
                "8",
                "--output",
                str(features),
            ]
        )
        == 0
    )
    table = np.load(features, allow_pickle=False)
    assert table.shape == (11, 64) and not table[0].any() and table[1:].any(axis=1).all()
    model = build_videorec(
        ModelConfig(encoder="frozen", features=str(features), dim=8, ffn_dim=16), num_items=10
    )
    assert torch.equal(model.item_encoder.features, torch.from_numpy(table))
    run = tmp_path / "run"
    train_main(
        [
            "--data",
            str(data),
            "--preset",
            "tiny",
            "--encoder",
            "frozen",
            "--features",
            str(features),
            "--output",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--no-progress",
        ]
    )
    assert (run / "results.json").exists()


def test_video_encoder_on_an_id_only_dataset_is_a_clear_error(tmp_path, capsys):
    data = write_dataset(tmp_path / "ds", _shifted_sequences(8, 6), max_seq_len=5)
    argv = ["--data", str(data), "--preset", "tiny", "--output", str(tmp_path / "run"), "--no-progress"]
    assert train_main(argv) == 2
    assert "needs frames" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_frozen_blocks_keep_their_batchnorm_statistics():
    backbone = build_backbone("tiny")
    apply_freezing(backbone, "top-k", 1)
    encoder = VideoItemEncoder(backbone, dim=4).train()
    before = encoder.backbone.stem[1].running_mean.clone()
    encoder(torch.tensor([1]), torch.randint(0, 255, (1, 3, 3, 16, 16), dtype=torch.uint8))
    assert torch.equal(encoder.backbone.stem[1].running_mean, before)  # frozen stem: eval mode
    assert encoder.backbone.layer2.training  # the trainable top block trains


def test_lost_samples_are_counted_and_stop_the_run_past_the_threshold(tmp_path, capsys):
    import re

    data = write_dataset(
        tmp_path / "ds", _shifted_sequences(24, 12), frames=solid_frames(12, 2), max_seq_len=5, per_shard=6
    )
    # every user sample of this shard is corrupt (and the manifest records the shard as it is)
    rewrite_shard(
        data, "train/train-000001.tar", lambda name, c: b"{not json" if name.endswith(".json") else c
    )
    flags = "--preset tiny --epochs 1 --batch-size 6 --frame-size 8 --no-progress --no-shard-shuffle"
    # 6 of 24 samples lost: far past the default 0.1%
    budget = (
        r"lost \d corrupt samples and 0 failed shard reads, more than --max-lost-fraction 0.001 of the 24"
    )
    capsys.readouterr()
    # exit 4 at the first step that loses one
    assert train_main(["--data", str(data), "--output", str(tmp_path / "strict"), *flags.split()]) == 4
    assert re.search(f"^videorec train: error: {budget}", capsys.readouterr().err, re.MULTILINE)
    assert not (tmp_path / "strict/results.json").exists()
    run = tmp_path / "lenient"
    train_main(["--data", str(data), "--output", str(run), "--max-lost-fraction", "0.3", *flags.split()])
    results = json.loads((run / "results.json").read_text())
    assert results["lost"] == {
        "skipped_samples": 6,
        "failed_reads": 0,
        "planned_samples": 24,
        "max_lost_fraction": 0.3,
    }
    train = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_samples"] for r in train if r["type"] == "train"][-1] == 6
