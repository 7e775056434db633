"""The video encoder registry: name -> :class:`~trainer.models.backbone.Encoder`, and building one.

:func:`build_backbone` builds a named backbone, randomly initialised or with pretrained weights
read offline (:func:`resolve_weights`), or rebuilt from a checkpoint's spec.
"""

from __future__ import annotations

from pathlib import Path

from trainer.models.backbone import Backbone, Encoder, tiny_backbone
from trainer.models.encoder_weights import load_pretrained, locate_weights, read_state_dict
from trainer.models.hub_backbones import HUB_ENCODERS, load_videomae_folder
from trainer.models.torchvision_backbones import TORCHVISION_ENCODERS

ENCODERS: dict[str, Encoder] = {"tiny": Encoder(tiny_backbone), **TORCHVISION_ENCODERS, **HUB_ENCODERS}
"""Encoder name -> registry entry."""


def resolve_weights(name: str, weights: str) -> tuple[str, Path]:
    """(kind, path) of ``weights`` for encoder ``name``: ``hf`` folder, ``file`` or cached ``name``.

    Raises :class:`~trainer.models.encoder_weights.MissingWeightsError`, naming the weights, the
    command that fetches them on a machine with internet and where to put them, when they are
    not on this machine (see :func:`~trainer.models.encoder_weights.locate_weights`).
    """
    return locate_weights(name, ENCODERS[name], weights)


def build_backbone(
    name: str,
    weights: str | None = None,
    *,
    num_frames: int = 5,
    frame_size: int = 112,
    variant: str = "full",
    spec: dict | None = None,
) -> Backbone:
    """The named backbone for clips of ``num_frames`` x ``frame_size`` px.

    ``weights``: see :func:`resolve_weights` (``None``: random initialisation). ``variant``:
    ``full``, or ``tiny`` (the same blocks and clip adaptations, narrow and shallow: for CPU
    tests). ``spec``: a :attr:`Backbone.spec` from a checkpoint, rebuilt without loading any
    weights (the checkpoint's state dict holds them).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown video encoder {name!r}; choose from {sorted(ENCODERS)} (or id / frozen)")
    entry = ENCODERS[name]
    if spec is not None:
        return entry.build(spec)
    spec = {
        "name": name,
        "num_frames": num_frames,
        "frame_size": frame_size,
        "variant": variant,
        "weights": weights,
    }
    if weights is None:
        return entry.build(spec)
    kind, path = resolve_weights(name, weights)
    if kind == "hf":
        return load_videomae_folder(path, spec)
    backbone = entry.build(spec)
    load_pretrained(backbone, entry, read_state_dict(path), str(path))
    return backbone
