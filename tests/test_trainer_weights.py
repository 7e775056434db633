"""Pretrained encoder weights, offline: names from the torch hub cache, state-dict files, model folders.

Every test makes its own weights: it saves a randomly initialised model, then loads it and
checks that the encoder holds exactly those tensors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from tests.fixtures_dataset import solid_frames, write_dataset
from trainer import checkpoint
from trainer.config import ModelConfig
from trainer.models.backbone import TinyVideoNet
from trainer.models.encoder_registry import build_backbone
from trainer.models.encoder_weights import MissingWeightsError, hub_checkpoint_dir
from trainer.models.video_item_encoder import VideoItemEncoder
from trainer.models.videorec import build_videorec
from trainer.train import main as train_main

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache of this test's own."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    hub_checkpoint_dir().mkdir(parents=True)
    return hub_checkpoint_dir()


def _assert_holds(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


def test_a_torchvision_weights_name_is_read_from_the_hub_cache(torch_home, capsys):
    torch.manual_seed(0)
    saved = torchvision.models.resnet18().state_dict()  # with its ImageNet head
    torch.save(saved, torch_home / "resnet18-f37072fd.pth")
    for name in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT"):
        backbone = build_backbone("resnet18", name)
        body = {f"image_net.{k}": v for k, v in saved.items() if not k.startswith("fc.")}
        _assert_holds(backbone.module, body)
    assert (
        "classification head dropped ['image_net.fc.bias', 'image_net.fc.weight']" in capsys.readouterr().out
    )


def test_a_pytorchvideo_checkpoint_is_read_from_the_hub_cache(torch_home):
    from pytorchvideo.models.hub import x3d_s

    torch.manual_seed(1)
    saved = x3d_s(pretrained=False).state_dict()
    torch.save({"model_state": saved}, torch_home / "X3D_S.pyth")  # the .pyth layout
    backbone = build_backbone("x3d_s", "KINETICS400")
    _assert_holds(backbone.module, {k: v for k, v in saved.items() if not k.startswith("blocks.5.proj.")})


def test_a_state_dict_file_loads_strictly(tmp_path):
    torch.manual_seed(2)
    saved = TinyVideoNet().state_dict()
    good = tmp_path / "tiny.pt"
    torch.save(saved, good)
    _assert_holds(build_backbone("tiny", str(good)).module, saved)

    partial = dict(saved)
    del partial["layer2.0.weight"]
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"missing keys \['layer2.0.weight'\]"):
        build_backbone("tiny", str(tmp_path / "partial.pt"))

    torch.save(dict(saved, **{"extra.weight": torch.zeros(1)}), tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected keys \['extra.weight'\]"):
        build_backbone("tiny", str(tmp_path / "extra.pt"))

    torch.save(dict(saved, **{"stem.0.weight": torch.zeros(1)}), tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"shape mismatches \['stem.0.weight'\]"):
        build_backbone("tiny", str(tmp_path / "shape.pt"))


def _videomae_folder(folder: Path) -> dict[str, torch.Tensor]:
    """A tiny VideoMAE pre-training model saved with ``save_pretrained``; returns its encoder tensors."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    torch.manual_seed(3)
    config = VideoMAEConfig(
        image_size=32,
        patch_size=16,
        num_frames=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    model = VideoMAEForPreTraining(config)
    model.save_pretrained(folder)
    return {k: v.clone() for k, v in model.videomae.state_dict().items()}


def test_a_videomae_folder_loads_and_the_checkpoint_spec_rebuilds_it_without_the_folder(tmp_path, capsys):
    folder = tmp_path / "videomae-tiny"
    encoder_tensors = _videomae_folder(folder)
    config = ModelConfig(encoder="videomae", encoder_weights=str(folder), freeze="top-k", dim=8)
    model = build_videorec(config, num_items=3, num_frames=5, frame_size=32)
    _assert_holds(model.item_encoder.backbone, encoder_tensors)
    assert "decoder" in capsys.readouterr().out  # the pre-training decoder is dropped, and said so
    spec = model.encoder_spec()
    assert spec["hf_config"]["num_frames"] == 6 and spec["hf_config"]["image_size"] == 32

    shutil.rmtree(folder)
    rebuilt = build_videorec(config, num_items=3, encoder_spec=json.loads(json.dumps(spec)))
    rebuilt.load_state_dict(model.state_dict())
    clips = torch.randint(0, 255, (2, 5, 3, 32, 32), dtype=torch.uint8)
    items = torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(rebuilt.eval().item_encoder(items, clips), model.eval().item_encoder(items, clips))


def test_missing_weights_stop_the_paper_preset_before_any_data_is_read(torch_home, tmp_path, capsys):
    run = tmp_path / "run"
    capsys.readouterr()
    argv = ["--data", str(tmp_path / "no-such-dataset"), "--preset", "paper", "--output", str(run)]
    assert train_main(argv) == 2  # the weights are named, not the missing dataset: nothing was read
    message = capsys.readouterr().err
    assert message.startswith("videorec train: error: ") and "Traceback" not in message
    assert "KINETICS400" in message and str(torch_home / "SLOWFAST_8x8_R50.pyth") in message
    url = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth"
    assert f"curl -L -o SLOWFAST_8x8_R50.pyth {url}" in message
    assert not run.exists()

    with pytest.raises(
        MissingWeightsError, match="hf download MCG-NJU/videomae-base --local-dir videomae-base"
    ):
        build_backbone("videomae", str(tmp_path / "videomae-base"))
    with pytest.raises(MissingWeightsError, match="curl -L -o r3d_18-b3b3357e.pth"):
        build_backbone("r3d_18", "KINETICS400_V1")
    with pytest.raises(ValueError, match="unknown weights 'KINETICS700'"):
        build_backbone("r3d_18", "KINETICS700")


def test_a_random_backbone_is_never_frozen_by_accident():
    for freeze in ("frozen", "top-k"):
        with pytest.raises(ValueError, match="randomly initialised tiny backbone"):
            build_videorec(ModelConfig(encoder="tiny", freeze=freeze, dim=8), num_items=3)
        build_videorec(
            ModelConfig(encoder="tiny", freeze=freeze, allow_random_backbone=True, dim=8), num_items=3
        )
    build_videorec(ModelConfig(encoder="tiny", freeze="all", dim=8), num_items=3)


def test_a_checkpoint_evaluates_without_the_weights_it_started_from(tmp_path):
    sequences = {str(u): [str((u + t) % 10 + 1) for t in range(7)] for u in range(16)}
    data = write_dataset(tmp_path / "ds", sequences, frames=solid_frames(12, 2), max_seq_len=4)
    torch.manual_seed(4)
    saved = TinyVideoNet().state_dict()
    weights = tmp_path / "pretrained-tiny.pt"
    torch.save(saved, weights)
    run = tmp_path / "run"
    flags = "--preset tiny --freeze top-k --trainable-blocks 1 --epochs 1 --batch-size 8 --frame-size 8"
    train_main(["--data", str(data), "--output", str(run), "--encoder-weights", str(weights), *flags.split()])
    best = checkpoint.load(run / "checkpoints" / "best.pt")
    # the frozen blocks still hold the pretrained tensors; the trainable top block moved
    for key in ("stem.0.weight", "layer1.0.weight", "layer1.1.running_mean"):
        assert torch.equal(best["model"][f"item_encoder.backbone.{key}"], saved[key]), key
    assert not torch.equal(best["model"]["item_encoder.backbone.layer2.0.weight"], saved["layer2.0.weight"])
    assert best["encoder_spec"]["weights"] == str(weights)

    weights.unlink()
    scored = tmp_path / "scored.json"
    done = subprocess.run(
        [sys.executable, "-m", "trainer.evaluate_cli", "--checkpoint", str(run / "checkpoints" / "best.pt")]
        + ["--split", "both", "--output", str(scored)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert json.loads(scored.read_text())["test"] == pytest.approx(results["test"], abs=1e-12, nan_ok=True)


def test_the_item_encoder_uses_the_loaded_backbone(tmp_path):
    torch.manual_seed(5)
    saved = TinyVideoNet().state_dict()
    torch.save(saved, tmp_path / "w.pt")
    encoder = VideoItemEncoder(build_backbone("tiny", str(tmp_path / "w.pt")), dim=4).eval()
    reference = TinyVideoNet().eval()
    reference.load_state_dict(saved)
    clips = torch.randint(0, 255, (2, 3, 3, 16, 16), dtype=torch.uint8)
    normalised = (clips.permute(0, 2, 1, 3, 4).float() / 255 - encoder.mean) / encoder.std
    with torch.no_grad():
        assert torch.allclose(encoder.features(clips), reference(normalised), atol=1e-6)


@pytest.mark.parametrize(
    ("version", "name"),
    [
        ("4.40.0", "torch_dtype"),
        ("4.55.4", "torch_dtype"),
        ("4.56.0", "dtype"),
        ("4.56.0.dev0", "dtype"),
        ("5.25.0", "dtype"),
    ],
)
def test_videomae_weights_load_with_the_dtype_argument_of_the_installed_transformers(version, name):
    """``from_pretrained(..., dtype=)`` exists from transformers 4.56; setup.py allows older releases,
    where ``dtype`` reaches the model's constructor and raises ``TypeError`` (issue 21). Checked by hand
    against transformers 4.40.2: the VideoMAE folder test above fails without this and passes with it."""
    from trainer.models.hub_backbones import dtype_argument

    assert dtype_argument(version) == name
