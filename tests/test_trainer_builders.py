"""The trainer's parts, each built and checked on its own with real torch objects and a real dataset:
``build_model``, ``build_optimizer``, ``build_scheduler``, ``build_source``, ``TrainConfig.validate``,
and the :class:`~trainer.trainer.Trainer` that composes them (no mixins, the state dict it writes)."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from tests.fixtures_dataset import solid_frames, write_dataset
from trainer import checkpoint
from trainer.builders import ScheduleClock, build_model, build_optimizer, build_scheduler, build_source
from trainer.config import TrainConfig, preset
from trainer.data import StreamPosition
from trainer.dataset import load_dataset
from trainer.errors import DatasetError, UsageError
from trainer.trainer import Trainer

CPU = torch.device("cpu")


def _sequences(users: int = 12, length: int = 7) -> dict[str, list[str]]:
    return {str(u): [str((u + t) % 9 + 1) for t in range(length)] for u in range(users)}


def _config(tmp_path, encoder: str = "id", **data) -> TrainConfig:
    config = preset("tiny")
    config.model.encoder, config.output, config.data.num_workers = encoder, str(tmp_path / "run"), 0
    config.data.frame_size = 8
    for name, value in data.items():
        setattr(config.data, name, value)
    return config


@pytest.fixture(scope="module")
def id_dataset(tmp_path_factory):
    return load_dataset(str(write_dataset(tmp_path_factory.mktemp("ids") / "ds", _sequences(), per_shard=4)))


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video") / "ds"
    return load_dataset(str(write_dataset(folder, _sequences(), frames=solid_frames(8, 2), per_shard=4)))


def test_build_model_is_seeded_by_the_config_and_sized_by_the_dataset(tmp_path, id_dataset):
    config = _config(tmp_path)
    model, module = build_model(config, id_dataset, CPU)
    assert module is model  # one process: no DDP wrapper
    again, _ = build_model(config, id_dataset, CPU)
    config.seed = 1
    other, _ = build_model(config, id_dataset, CPU)
    weights = model.state_dict()
    assert all(torch.equal(weights[k], again.state_dict()[k]) for k in weights)
    assert any(not torch.equal(weights[k], other.state_dict()[k]) for k in weights)
    embedding = next(t for k, t in weights.items() if t.dim() == 2 and t.shape[0] == id_dataset.num_items + 1)
    assert embedding.shape[1] == config.model.dim  # one row per item and the padding item
    assert not model.needs_frames


def test_build_model_turns_flags_the_model_refuses_into_a_usage_error(tmp_path, video_dataset):
    config = _config(tmp_path, "tiny")
    config.model.freeze = "frozen"  # a random tiny backbone frozen: trains nothing of it
    with pytest.raises(UsageError, match="randomly initialised tiny backbone"):
        build_model(config, video_dataset, CPU)


def test_build_optimizer_gives_the_encoder_its_own_group(tmp_path, id_dataset, video_dataset):
    config = _config(tmp_path, "tiny")
    config.optim.lr, config.optim.encoder_lr = 1e-3, 5e-4
    config.optim.weight_decay, config.optim.encoder_weight_decay = 0.1, 0.0
    model, _ = build_model(config, video_dataset, CPU)
    groups = build_optimizer(config.optim, model).param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-3, 0.1), (5e-4, 0.0)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.item_encoder.encoder_parameters()}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)

    id_model, _ = build_model(_config(tmp_path), id_dataset, CPU)  # id embeddings are the recommender's
    assert len(build_optimizer(config.optim, id_model).param_groups) == 1


def _learning_rates(config: TrainConfig, total: list[int], steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    clock = ScheduleClock(step_batches=1, warmup_units=config.optim.warmup_steps, total_units=total[0])
    scheduler = build_scheduler(config.optim, optimizer, clock)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_build_scheduler_warms_up_then_decays_to_the_floor(tmp_path):
    config = _config(tmp_path)
    config.optim.warmup_steps, config.optim.min_lr_ratio, config.optim.schedule = 2, 0.1, "cosine"
    rates = _learning_rates(config, [10], 12)
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert rates[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert rates[10:] == pytest.approx([0.1, 0.1])
    assert all(a >= b for a, b in zip(rates[1:], rates[2:], strict=False))
    config.optim.schedule = "constant"
    assert _learning_rates(config, [10], 5) == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0])


def _rates_of(config: TrainConfig, clock: ScheduleClock, start_step: int, end_step: int) -> list[float]:
    """The learning rates of steps ``start_step + 1 .. end_step`` on ``clock``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(config.optim, optimizer, clock)
    rates = []
    for step in range(end_step):
        if step >= start_step:
            rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_the_schedule_goes_on_along_its_curve_after_a_resume_on_another_world_size(tmp_path):
    """2 ranks train 40 global batches in 20 steps; stopped after step 6 (12 batches), 1 rank trains the
    28 left in 28 steps. The rates follow the 2-rank curve by global batches: no jump at the resume."""
    config = _config(tmp_path)
    config.optim.warmup_steps, config.optim.min_lr_ratio, config.optim.schedule = 2, 0.0, "cosine"
    two = ScheduleClock(step_batches=2, warmup_units=4, total_units=40)
    planned = _rates_of(config, two, 0, 20)
    saved = two.state_dict(6)
    assert saved == {"units": 12, "warmup_units": 4}

    one = ScheduleClock(step_batches=1, warmup_units=0)
    one.resume(6, saved)
    one.total_units = one.units(6 + 28)
    assert one.total_units == 40
    resumed = _rates_of(config, one, 6, 6 + 28)
    assert resumed[0] == pytest.approx(planned[6])  # step 7 trains batches 12-13 either way
    assert resumed[::2] == pytest.approx(
        planned[6:]
    )  # every other 1-rank step starts a 2-rank step's batches
    assert all(a >= b for a, b in zip(resumed, resumed[1:], strict=False))
    assert resumed[-1] == pytest.approx(planned[-1], abs=0.02)  # both end at the floor


def test_build_source_streams_the_manifests_train_shards(tmp_path, id_dataset):
    config = _config(tmp_path, batch_size=4)
    source = build_source(config, id_dataset, use_frames=False)
    assert source.urls == id_dataset.shard_urls("train") and len(source.urls) == 3
    assert source.samples == id_dataset.shard_samples("train") == 12
    assert source.windows is None and source.item_store is None and source.train_store is None
    assert source.global_order_on(4, 2)  # no embedded frames: the global order on any world size
    batches = list(
        source.batches(
            StreamPosition(num_workers=0, world_size=1),
            seed=0,
            max_seq_len=config.model.max_seq_len,
            batches_per_epoch=3,
            rank=0,
            world_size=1,
            batches_per_step=1,
            global_order=True,
            pin_memory=False,
        )
    )
    assert [len(b["items"]) for b in batches] == [4, 4, 4]
    assert len({k for b in batches for k in b["sample_keys"]}) == 12  # every train sample once


def test_build_source_windows_sequences_and_checks_the_dataset(tmp_path, id_dataset, video_dataset):
    config = _config(tmp_path, source="sequences")
    config.model.max_seq_len = 2  # each user's 5 training interactions take more than one window
    windows = build_source(config, id_dataset, use_frames=False)
    assert windows.samples == len(windows.windows) > 12
    assert all(2 <= len(w) <= 3 for w in windows.windows)
    video = build_source(_config(tmp_path, "tiny"), video_dataset, use_frames=True)
    assert video.item_store is not None and video.embedded_frames
    assert video.global_order_on(1, 0) and not video.global_order_on(2, 0)  # two readers split the shards
    with pytest.raises(UsageError, match="needs frames but dataset .* has none"):
        build_source(_config(tmp_path, "tiny"), id_dataset, use_frames=True)
    empty = load_dataset(str(write_dataset(tmp_path / "short", {"1": ["1", "2", "3"]})))
    with pytest.raises(DatasetError, match="has no train shards"):
        build_source(_config(tmp_path), empty, use_frames=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: setattr(c.optim, "epochs", 0), "--epochs must be at least 1, got 0"),
        (lambda c: setattr(c.optim, "lr", math.nan), "--lr must be a finite number above 0, got nan"),
        (lambda c: setattr(c.model, "num_heads", 3), "--num-heads 3 does not divide the width --dim 32"),
        (lambda c: setattr(c.optim, "schedule", "step"), "unknown --schedule 'step'"),
        (lambda c: setattr(c.data, "source", "logs"), "unknown --source 'logs'"),
        (lambda c: setattr(c, "selection_metric", "MRR"), "unknown --selection-metric 'MRR'"),
        (lambda c: setattr(c.loss, "candidates", "full"), "--candidates full needs an id or frozen encoder"),
        (lambda c: setattr(c.data, "source", "sequences"), "--source sequences has no frames"),
    ],
)
def test_validate_refuses_each_flag_in_one_line(tmp_path, change, message):
    config = _config(tmp_path, "tiny")
    config.validate()
    change(config)
    with pytest.raises(UsageError, match=message):
        config.validate()


def test_the_trainer_composes_its_parts_and_writes_the_checkpoint_keys_it_always_wrote(tmp_path, id_dataset):
    assert Trainer.__mro__ == (Trainer, object)  # no mixins
    init = inspect.getsource(Trainer.__init__).splitlines()
    assert len(init) <= 40
    trainer = Trainer(_config(tmp_path), id_dataset)
    assert trainer.checkpoints.folder == tmp_path / "run" / "checkpoints"
    assert trainer.evaluator.model is trainer.model is trainer.stepper.model
    state = copy.deepcopy(trainer.state_dict())  # the weights are the live tensors
    # what last.pt held before the parts, and the learning-rate clock since
    assert sorted(state) == sorted(checkpoint.RESUME_KEYS + checkpoint.NEWER_RESUME_KEYS)
    older = {k: v for k, v in state.items() if k not in checkpoint.NEWER_RESUME_KEYS}
    batch = next(trainer._batches())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    assert math.isfinite(trainer.train_step([batch])) and trainer.step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    trainer.load_state_dict(state)  # back to step 0, the weights it started from
    assert trainer.step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    trainer.load_state_dict(older)  # a checkpoint from before the clock: its steps were of its world size
    assert trainer.schedule.state_dict(0) == state["schedule"]


def test_a_trainer_resumed_from_two_ranks_goes_on_along_their_learning_rate_curve(tmp_path, id_dataset):
    """A checkpoint of 2 ranks after 1 step (global batches 0-1 of 3 an epoch) resumed on 1 rank: the
    schedule counts the 2 batches done and the batches left, so the rate is where the 2 ranks left it."""
    config = _config(tmp_path, batch_size=4)
    config.optim.epochs, config.optim.warmup_steps, config.optim.min_lr_ratio = 4, 0, 0.0
    config.optim.schedule = "cosine"
    trainer = Trainer(config, id_dataset)
    state = copy.deepcopy(trainer.state_dict())
    state["step"], state["schedule"] = 1, {"units": 2, "warmup_units": 0}
    state["position"].update(world_size=2, batches=2)
    trainer.load_state_dict(state)

    assert trainer.batches_per_epoch == 3 and trainer.total_steps == 1 + 1 + 3 * 3
    assert trainer.schedule.total_units == 12  # every global batch of the 4 epochs, counted once
    rate = trainer.stepper.scheduler.lr_lambdas[0]
    assert rate(1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 12)))  # the 2-rank curve at batch 2
    assert rate(trainer.total_steps) == pytest.approx(0.0)
