"""Backbones from other hubs: pytorchvideo's ``slowfast_r50`` and ``x3d_s``, Hugging Face's VideoMAE.

Every one accepts the mission's clips (5 frames, 112 or 224 px):

- ``slowfast_r50``: the fast pathway takes all T frames, the slow pathway ``ceil(T / 4)``
  evenly spaced ones (frames 0 and 4 of 5), which is what the fast->slow fusion's temporal
  stride of 4 produces; the head's fixed pools become adaptive;
- ``x3d_s``: the head's fixed ``(13, 5, 5)`` pool (13 frames at 160 px) becomes adaptive;
- ``videomae``: tubelets span 2 frames, so an odd clip repeats its last frame (5 -> 6); the
  model is built for the run's frame count and size (its positions are fixed sinusoids, not
  weights), and the features are the mean of the last hidden states.

pytorchvideo and transformers are imported only when one of these is built. A VideoMAE model
folder is read here too (:func:`load_videomae_folder`, local files only).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from trainer.models.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PYTORCHVIDEO_MEAN,
    PYTORCHVIDEO_STD,
    Backbone,
    Encoder,
    is_tiny,
    pad_frames,
)


def _pytorchvideo_hub():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation inside pytorchvideo
        warnings.simplefilter("ignore", UserWarning)
        from pytorchvideo.models import hub
    return hub


SLOWFAST_ALPHA = 4
"""Frame-rate ratio of slowfast_r50's pathways (its fusion convs stride 4 frames)."""


def slowfast_pathways(clips: torch.Tensor, alpha: int = SLOWFAST_ALPHA) -> list[torch.Tensor]:
    """``[n, 3, T, H, W]`` -> [slow ``ceil(T / alpha)`` evenly spaced frames, fast all T frames]."""
    length = clips.shape[2]
    slow = max(1, math.ceil(length / alpha))
    index = torch.linspace(0, length - 1, slow, device=clips.device).round().long()
    return [clips.index_select(2, index), clips]


def _strip_pytorchvideo_head(head: nn.Module) -> int:
    """Remove the classification projection, its dropout and activation (pooling stays, adaptive);
    returns the feature width."""
    feature_dim = head.proj.in_features
    head.proj, head.dropout, head.activation = None, None, None
    head.output_pool = nn.AdaptiveAvgPool3d(1)
    return feature_dim


def _slowfast_r50(spec: dict) -> Backbone:
    narrow = {"stem_dim_outs": (8, 1)} if is_tiny(spec) else {}  # 1/8 of the widths
    model = _pytorchvideo_hub().slowfast_r50(pretrained=False, **narrow)
    model.blocks[5].pool = nn.ModuleList([nn.AdaptiveAvgPool3d(1), nn.AdaptiveAvgPool3d(1)])
    feature_dim = _strip_pytorchvideo_head(model.blocks[6])
    blocks = [f"blocks.{i}" for i in range(5)]
    return Backbone(
        model, feature_dim, blocks, spec, PYTORCHVIDEO_MEAN, PYTORCHVIDEO_STD, prepare=slowfast_pathways
    )


def _x3d_s(spec: dict) -> Backbone:
    narrow = {"width_factor": 0.5, "depth_factor": 0.5, "head_dim_out": 64} if is_tiny(spec) else {}
    model = _pytorchvideo_hub().x3d_s(pretrained=False, **narrow)
    head = model.blocks[5]
    head.pool.pool = nn.AdaptiveAvgPool3d(1)
    feature_dim = _strip_pytorchvideo_head(head)
    blocks = [f"blocks.{i}" for i in range(6)]
    return Backbone(model, feature_dim, blocks, spec, PYTORCHVIDEO_MEAN, PYTORCHVIDEO_STD)


def pytorchvideo_url(model: str) -> str:
    """Download URL of pytorchvideo's pretrained ``model`` (its hub's checkpoint table)."""
    hub = _pytorchvideo_hub()
    module = hub.slowfast if model.startswith("slowfast") else hub.x3d
    return module.checkpoint_paths[model]


TINY_VIDEOMAE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _videomae_config(spec: dict):
    from transformers import VideoMAEConfig

    if "hf_config" in spec:
        config = VideoMAEConfig(**spec["hf_config"])
    else:
        config = VideoMAEConfig(**(TINY_VIDEOMAE if is_tiny(spec) else {}))
    config.num_frames = math.ceil(spec["num_frames"] / config.tubelet_size) * config.tubelet_size
    config.image_size = spec["frame_size"]
    return config


def videomae_clip(clips: torch.Tensor, tubelet: int) -> torch.Tensor:
    """``[n, 3, T, H, W]`` -> VideoMAE's ``[n, T', 3, H, W]``, the last frame repeated up to a whole tubelet."""
    return pad_frames(clips, tubelet).transpose(1, 2)


def _videomae_backbone(model, spec: dict) -> Backbone:
    config = model.config
    spec = dict(spec, hf_config=json.loads(config.to_json_string(use_diff=False)))
    blocks = ["embeddings"] + [f"encoder.layer.{i}" for i in range(config.num_hidden_layers)]
    if getattr(model, "layernorm", None) is not None:
        blocks.append("layernorm")
    return Backbone(
        model,
        config.hidden_size,
        blocks,
        spec,
        IMAGENET_MEAN,
        IMAGENET_STD,
        prepare=lambda clips: videomae_clip(clips, config.tubelet_size),
        readout=lambda output: output.last_hidden_state.mean(dim=1),
    )


def _videomae(spec: dict) -> Backbone:
    from transformers import VideoMAEModel

    return _videomae_backbone(VideoMAEModel(_videomae_config(spec)), spec)


DTYPE_ARGUMENT_SINCE = (4, 56)
"""transformers renamed ``from_pretrained``'s ``torch_dtype`` to ``dtype`` in 4.56; earlier releases
pass an unknown ``dtype`` on to the model's constructor, which raises ``TypeError``."""


def dtype_argument(transformers_version: str) -> str:
    """The name ``from_pretrained`` takes the weights' dtype under in this transformers version."""
    from packaging.version import Version  # a dependency of transformers

    return "dtype" if Version(transformers_version).release[:2] >= DTYPE_ARGUMENT_SINCE else "torch_dtype"


def load_videomae_folder(folder: Path, spec: dict) -> Backbone:
    """VideoMAE from a local Hugging Face model folder, built for ``spec``'s clips; raises if an
    encoder weight is missing, unused or of another shape (the pretraining decoder is dropped)."""
    import transformers
    from transformers import VideoMAEConfig, VideoMAEModel

    config = VideoMAEConfig.from_pretrained(folder, local_files_only=True)
    config = _videomae_config(dict(spec, hf_config=config.to_dict()))
    float32 = {dtype_argument(transformers.__version__): torch.float32}
    model, info = VideoMAEModel.from_pretrained(
        folder, config=config, local_files_only=True, output_loading_info=True, **float32
    )
    encoder_keys = ("embeddings.", "encoder.", "layernorm.")
    missing = sorted(info["missing_keys"])
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", []))
    dropped = sorted(info["unexpected_keys"])
    print(f"encoder weights {folder}: missing keys {missing}; not part of the encoder, dropped {dropped}")
    strays = [k for k in dropped if k.removeprefix("videomae.").startswith(encoder_keys)]
    if missing or mismatched or strays:
        raise ValueError(
            f"{folder}: does not match VideoMAE: missing keys {missing[:10]}, "
            f"shape mismatches {mismatched[:10]}, unused encoder keys {strays[:10]}"
        )
    model.train()
    return _videomae_backbone(model, spec)


HUB_ENCODERS: dict[str, Encoder] = {
    "slowfast_r50": Encoder(
        _slowfast_r50, head=("blocks.6.proj.",), weights={"KINETICS400": "pytorchvideo:slowfast_r50"}
    ),
    "x3d_s": Encoder(_x3d_s, head=("blocks.5.proj.",), weights={"KINETICS400": "pytorchvideo:x3d_s"}),
    "videomae": Encoder(_videomae, hugging_face="MCG-NJU/videomae-base"),
}
"""Registry name -> entry, for the pytorchvideo and Hugging Face backbones."""
