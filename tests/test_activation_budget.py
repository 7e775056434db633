"""The encoder's activation budget: a training step's clips are encoded in checkpointed chunks that fit it.

- chunking changes no number where the backbone has no batch statistics (outputs and every gradient
  equal the whole step's);
- the probe that measures a clip's saved activations leaves the model's statistics and the RNG as
  they were;
- a step runs whole in evaluation, without gradients, with a frozen backbone, within the budget, or
  with a budget of 0; ``--activation-budget-gb`` reaches the encoder from the command line.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from trainer.config import ModelConfig
from trainer.models.backbone import Backbone
from trainer.models.video_item_encoder import VideoItemEncoder, activation_budget_bytes
from trainer.models.videorec import build_item_encoder
from trainer.train import build_parser, config_from_args


def _no_batch_statistics() -> Backbone:
    """A small 3D CNN without batch norm: its clips do not interact, so chunking must be exact."""
    module = nn.Sequential(
        nn.Conv3d(3, 8, 3, padding=1),
        nn.GELU(),
        nn.Conv3d(8, 16, 3, stride=2, padding=1),
        nn.GELU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
    )
    return Backbone(module, 16, ["0", "2"], {"name": "test"})


def _clips(n: int, size: int = 16) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 4, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(n)
    )


def test_chunked_encoding_gives_the_whole_steps_outputs_and_gradients():
    torch.manual_seed(0)
    whole = VideoItemEncoder(_no_batch_statistics(), dim=8, activation_budget_gb=0)
    chunked = VideoItemEncoder(_no_batch_statistics(), dim=8)
    chunked.load_state_dict(whole.state_dict())
    frames = _clips(7)
    per_clip = chunked.saved_bytes_per_clip(frames)
    chunked.activation_budget_gb = 2.5 * per_clip / 1e9  # two clips a chunk: 2 + 2 + 2 + 1
    assert per_clip > 0 and chunked.training_chunk(frames) == 2 and whole.training_chunk(frames) == 7

    outputs = []
    for encoder in (whole, chunked):
        encoder.train()
        out = encoder(torch.arange(7), frames)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[1], outputs[0])
    for (name, a), (_, b) in zip(whole.named_parameters(), chunked.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_the_probe_leaves_statistics_and_rng_as_they_were():
    encoder = build_item_encoder(ModelConfig(encoder="tiny", freeze="all"), 10, num_frames=4, frame_size=32)
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng = torch.get_rng_state()
    assert encoder.saved_bytes_per_clip(_clips(3, 32)) > 0
    assert encoder.training  # back in training mode
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_a_step_runs_whole_where_nothing_would_be_saved_or_the_budget_holds_it(caplog):
    encoder = VideoItemEncoder(
        _no_batch_statistics(), dim=8, activation_budget_gb=1e-9
    )  # a byte: a clip a chunk
    frames = _clips(5)
    encoder.train()
    with caplog.at_level(logging.INFO, logger="trainer.models.video_item_encoder"):
        assert encoder.training_chunk(frames) == 1
    assert "encoding at most 1 clips at a time in training" in caplog.text
    with torch.no_grad():
        assert encoder.training_chunk(frames) == 5
    encoder.eval()
    assert encoder.training_chunk(frames) == 5
    encoder.train()
    encoder.backbone.requires_grad_(False)  # frozen: the backbone saves nothing for a backward pass
    assert encoder.training_chunk(frames) == 5
    encoder.backbone.requires_grad_(True)
    encoder.activation_budget_gb = 0
    assert encoder.training_chunk(frames) == 5
    encoder.activation_budget_gb = 1.0
    assert encoder.training_chunk(frames) == 5


def test_the_budget_defaults_by_device_and_reaches_the_encoder_from_the_command_line():
    assert activation_budget_bytes(None, torch.device("cpu")) == int(1e9)
    assert activation_budget_bytes(0.25, torch.device("cpu")) == int(0.25e9)
    args = build_parser().parse_args(["--data", "d", "--output", "o", "--activation-budget-gb", "0.5"])
    config = config_from_args(args)
    assert config.model.activation_budget_gb == 0.5
    encoder = build_item_encoder(config.model, 10, num_frames=4, frame_size=32)
    assert encoder.activation_budget_gb == 0.5


@pytest.mark.parametrize("flag", ["-1", "nan"])
def test_a_negative_or_missing_budget_is_refused(flag, capsys):
    from trainer.train import main

    assert main(["--data", "d", "--output", "o", "--activation-budget-gb", flag]) == 2
    assert "--activation-budget-gb" in capsys.readouterr().err


def test_batch_norm_counts_each_chunk_once_though_it_is_computed_twice():
    """Running statistics after a chunked step equal those of the chunks run once each (the backward
    pass's recomputation is not counted again), under block checkpointing as well."""
    for block_checkpointing in (False, True):
        config = ModelConfig(encoder="tiny", freeze="all", activation_checkpointing=block_checkpointing)
        chunked = build_item_encoder(config, 10, num_frames=4, frame_size=32)
        reference = build_item_encoder(config, 10, num_frames=4, frame_size=32)
        reference.load_state_dict(chunked.state_dict())
        frames = _clips(4, 32)
        chunked.activation_budget_gb = 2.5 * chunked.saved_bytes_per_clip(frames) / 1e9  # chunks of 2
        chunked.train()
        reference.train()
        chunked(torch.arange(4), frames).sum().backward()
        for part in frames.split(2):
            reference(torch.arange(2), part)
        stats = {k: v for k, v in reference.state_dict().items() if "running_" in k}
        assert stats
        for key, value in stats.items():
            torch.testing.assert_close(chunked.state_dict()[key], value, msg=key)


def test_block_checkpointing_keeps_the_parameter_names_so_checkpoints_load_either_way():
    plain = build_item_encoder(ModelConfig(encoder="tiny", freeze="all"), 10, num_frames=4, frame_size=32)
    config = ModelConfig(encoder="tiny", freeze="all", activation_checkpointing=True)
    checkpointed = build_item_encoder(config, 10, num_frames=4, frame_size=32)
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    checkpointed.load_state_dict(plain.state_dict())
    frames = _clips(3, 32)
    plain.eval()
    checkpointed.eval()
    torch.testing.assert_close(checkpointed(torch.arange(3), frames), plain(torch.arange(3), frames))


def _ddp_rank(rank: int, store: str, out: str) -> None:
    """One gloo rank: a DDP-wrapped encoder, chunked a clip at a time; saves its averaged gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=2)
    torch.manual_seed(0)
    encoder = VideoItemEncoder(_no_batch_statistics(), dim=8, activation_budget_gb=1e-9)
    model = DistributedDataParallel(encoder)
    model.train()
    frames = _clips(6)[3 * rank : 3 * rank + 3]
    (model(torch.arange(3), frames) * (rank + 1)).sum().backward()
    torch.save({n: p.grad for n, p in encoder.named_parameters()}, f"{out}/grads-{rank}.pt")
    dist.destroy_process_group()


def test_chunked_encoding_under_ddp_gives_the_averaged_whole_batch_gradients(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ranks = [
        context.Process(target=_ddp_rank, args=(r, f"file://{tmp_path}/store", str(tmp_path))) for r in (0, 1)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    assert [p.exitcode for p in ranks] == [0, 0]

    torch.manual_seed(0)
    whole = VideoItemEncoder(_no_batch_statistics(), dim=8, activation_budget_gb=0)
    whole.train()
    frames = _clips(6)
    out = whole(torch.arange(6), frames)
    ((out[:3].sum() + 2 * out[3:].sum()) / 2).backward()  # DDP averages the ranks' gradients
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"grads-{rank}.pt")
        for name, parameter in whole.named_parameters():
            torch.testing.assert_close(grads[name], parameter.grad, msg=f"rank {rank}: {name}")
