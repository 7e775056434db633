"""Pretrained weights, offline: where they are, reading a state dict, loading it into a backbone.

Weights are never downloaded here: a missing file raises :class:`MissingWeightsError` with the
one command that fetches it, before training starts. ``encoder_registry.resolve_weights`` and
``build_backbone`` look the encoder up by name and call these.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trainer.models.backbone import Backbone, Encoder
from trainer.models.hub_backbones import pytorchvideo_url

STATE_DICT_SUFFIXES = (".pt", ".pth", ".pyth", ".bin")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights that are not on this machine (the message says how to get them)."""


def hub_checkpoint_dir() -> Path:
    """Where torchvision / pytorchvideo keep downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def locate_weights(name: str, entry: Encoder, weights: str) -> tuple[str, Path]:
    """(kind, path) of ``weights`` for encoder ``name`` (registry entry ``entry``): ``hf`` folder,
    ``file`` or cached ``name``.

    Raises :class:`MissingWeightsError`, naming the weights, the command that fetches them on
    a machine with internet and where to put them, when they are not on this machine.
    """
    path = Path(weights).expanduser()
    if path.is_dir():
        if entry.hugging_face is None:
            raise ValueError(
                f"{weights}: a model folder, but encoder {name!r} takes a state-dict file or name"
            )
        if not (path / "config.json").is_file():
            raise MissingWeightsError(f"{weights}: not a Hugging Face model folder (no config.json)")
        return "hf", path
    if path.is_file():
        return "file", path
    if entry.hugging_face is not None:
        raise MissingWeightsError(
            f"encoder {name!r}: weights folder {weights} is not on this machine. Training never downloads. "
            f"On a machine with internet run (pip install huggingface_hub)\n"
            f"    hf download {entry.hugging_face} --local-dir {path.name}\n"
            f"then copy that folder to {path} (another VideoMAE repository works the same way)"
        )
    if path.suffix in STATE_DICT_SUFFIXES or os.sep in weights:
        raise MissingWeightsError(f"encoder {name!r}: weights file {weights} does not exist")
    short = weights.rpartition(".")[2]  # R3D_18_Weights.KINETICS400_V1 -> KINETICS400_V1
    if short == "DEFAULT" and entry.weights:
        short = next(iter(entry.weights))
    if short not in entry.weights:
        known = sorted(entry.weights) or "none (pass a local state-dict file)"
        raise ValueError(f"encoder {name!r}: unknown weights {weights!r}; known names: {known}")
    url = entry.weights[short]
    if url.startswith("pytorchvideo:"):
        url = pytorchvideo_url(url.partition(":")[2])
    cached = hub_checkpoint_dir() / url.rsplit("/", 1)[-1]
    if not cached.is_file():
        raise MissingWeightsError(
            f"encoder {name!r}: pretrained weights {short} are not on this machine (looked for {cached}). "
            f"Training never downloads. On a machine with internet run\n"
            f"    curl -L -o {cached.name} {url}\n"
            f"then put the file at {cached} (or set TORCH_HOME), or pass its path to --encoder-weights"
        )
    return "name", cached


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file, without unpickling objects (``weights_only``); unwraps the usual
    containers (``model_state`` in pytorchvideo's ``.pyth``, ``state_dict``, ``model``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model_state", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


def load_pretrained(backbone: Backbone, entry: Encoder, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``backbone``, except the classification head (dropped).

    Prints the dropped head keys and any missing / unexpected keys; raises if any key of the
    backbone is missing, any key is unexpected, or a shape differs.
    """
    state = {entry.key_prefix + key: value for key, value in state.items()}
    head = sorted(k for k in state if k.startswith(tuple(entry.key_prefix + h for h in entry.head)))
    body = {k: v for k, v in state.items() if k not in head}
    expected = backbone.module.state_dict()
    missing = sorted(set(expected) - set(body))
    unexpected = sorted(set(body) - set(expected))
    shapes = sorted(k for k in set(body) & set(expected) if body[k].shape != expected[k].shape)
    print(
        f"encoder weights {source}: {len(body)} tensors loaded, classification head dropped {head}; "
        f"missing keys {missing}; unexpected keys {unexpected}"
    )
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source}: does not match encoder {backbone.spec['name']!r}: missing keys {missing[:10]}, "
            f"unexpected keys {unexpected[:10]}, shape mismatches {shapes[:10]}"
        )
    backbone.module.load_state_dict(body, strict=True)
