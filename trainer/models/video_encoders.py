"""Video item encoders: a registry of backbones, pretrained weights read offline, a freezing policy.

Each registry entry builds a backbone mapping float clips ``[n, 3, T, H, W]`` to features
``[n, F]`` (classification head removed) and lists its blocks from input to output, which
the freezing policy (``frozen`` / ``top-k`` / ``all``) and activation checkpointing act on.
:class:`VideoItemEncoder` takes uint8 clips ``[n, T, 3, H, W]`` straight from the loader.

Every backbone accepts the mission's clips (5 frames, 112 or 224 px). Where an architecture
needs something else, its ``prepare`` step adapts the clip and its head pools adaptively:

- ``s3d``: the head's fixed ``(2, 7, 7)`` average pool becomes adaptive (5 frames at 224 px
  leave 1 x 7 x 7 features, at 112 px 1 x 3 x 3), and an odd clip repeats its last frame
  (5 -> 6): on the CPU, torch 2.14.1's oneDNN weight gradient of s3d's first temporal
  convolution (kernel 7, stride 2, 64 channels) corrupts the heap for exactly 5 frames
  (3, 4 and 6 to 13 are fine), and the stride-2 convolution then sees whole frame pairs;
- ``mvit_v2_s``: its relative positions are built for 16 x 224 x 224, so the clip is
  resampled in time by nearest index (5 frames -> 16, each repeated 3 or 4 times) and
  resized to 224 px (bilinear) when smaller;
- ``slowfast_r50``: the fast pathway takes all T frames, the slow pathway ``ceil(T / 4)``
  evenly spaced ones (frames 0 and 4 of 5), which is what the fast->slow fusion's temporal
  stride of 4 produces; the head's fixed pools become adaptive;
- ``x3d_s``: the head's fixed ``(13, 5, 5)`` pool (13 frames at 160 px) becomes adaptive;
- ``videomae``: tubelets span 2 frames, so an odd clip repeats its last frame (5 -> 6); the
  model is built for the run's frame count and size (its positions are fixed sinusoids, not
  weights), and the features are the mean of the last hidden states.

Pretrained weights are never downloaded here (see :func:`resolve_weights`): a missing file
stops the run before training with the one command that fetches it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PYTORCHVIDEO_MEAN, PYTORCHVIDEO_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
STATE_DICT_SUFFIXES = (".pt", ".pth", ".pyth", ".bin")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights that are not on this machine (the message says how to get them)."""


@dataclass
class Backbone:
    """A feature extractor, its blocks (input to output) and how to rebuild it without weights."""

    module: nn.Module
    feature_dim: int
    block_names: list[str]
    spec: dict
    """JSON-able: ``name``, ``num_frames``, ``frame_size`` (+ ``hf_config`` for Hugging Face nets);
    :func:`build_backbone` rebuilds the same architecture from it (a checkpoint stores it)."""
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    prepare: Callable[[torch.Tensor], object] | None = None
    """Normalised float clips ``[n, 3, T, H, W]`` -> the module's input (default: as is)."""
    readout: Callable[[object], torch.Tensor] | None = None
    """The module's output -> features ``[n, F]`` (default: as is)."""


@dataclass
class Encoder:
    """A registry entry."""

    build: Callable[[dict], Backbone]
    """Spec -> the architecture, randomly initialised."""
    head: tuple[str, ...] = ()
    """Key prefixes of the pretrained classification head, which the backbone drops."""
    key_prefix: str = ""
    """Prefix that maps a pretrained state dict's keys onto the backbone's."""
    weights: dict[str, str] = field(default_factory=dict)
    """Weights name -> download URL (the torch hub cache keeps the URL's file name)."""
    hugging_face: str | None = None
    """Hugging Face model id of the pretrained weights (loaded from a local folder only)."""


# --- the architectures -------------------------------------------------------------------------


class TinyVideoNet(nn.Module):
    """A 3-block 3D CNN for CPU tests and demos (about 30k parameters)."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin: int, cout: int, temporal: int) -> nn.Sequential:
            conv = nn.Conv3d(cin, cout, (temporal, 3, 3), stride=(1, 2, 2), padding=(temporal // 2, 1, 1))
            return nn.Sequential(conv, nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

        self.stem = block(3, width, 1)
        self.layer1 = block(width, 2 * width, 3)
        self.layer2 = block(2 * width, 4 * width, 3)
        self.pool = nn.AdaptiveAvgPool3d(1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layer2(self.layer1(self.stem(clips)))).flatten(1)


class PerFrameImageNet(nn.Module):
    """An image backbone applied to every frame, features averaged over time."""

    def __init__(self, image_net: nn.Module):
        super().__init__()
        self.image_net = image_net

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(n * t, c, h, w)
        return self.image_net(frames).view(n, t, -1).mean(dim=1)


def _torchvision_mean_std(name: str) -> tuple[tuple, tuple]:
    preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    return tuple(preset.mean), tuple(preset.std)


def _torchvision_urls(name: str) -> dict[str, str]:
    return {w.name: w.url for w in torchvision.models.get_model_weights(name)}


def _head_in_features(head: nn.Module) -> int:
    """Input width of a classification head (its first Linear or Conv)."""
    for layer in head.modules():
        if isinstance(layer, nn.Linear):
            return layer.in_features
        if isinstance(layer, nn.Conv3d):
            return layer.in_channels
    raise ValueError(f"no Linear / Conv3d in head {head}")


def _is_tiny(spec: dict) -> bool:
    variant = spec.get("variant", "full")
    if variant not in ("full", "tiny"):
        raise ValueError(f"unknown encoder variant {variant!r}; choose full or tiny")
    return variant == "tiny"


def _torchvision_video(
    name: str,
    head: str,
    blocks: Callable[[nn.Module], list[str]],
    tiny: Callable[[], nn.Module],
    adapt: Callable[[Backbone], None] | None = None,
) -> Encoder:
    def build(spec: dict) -> Backbone:
        model = tiny() if _is_tiny(spec) else getattr(torchvision.models.video, name)(weights=None)
        feature_dim = _head_in_features(getattr(model, head))
        setattr(model, head, nn.Identity())
        mean, std = _torchvision_mean_std(name)
        backbone = Backbone(model, feature_dim, blocks(model), spec, mean, std)
        if adapt is not None:
            adapt(backbone)
        return backbone

    return Encoder(build, head=(f"{head}.",), weights=_torchvision_urls(name))


TINY_WIDTHS = (8, 16, 32, 64)
"""Stage widths of the ``tiny`` variants (CPU tests, ``gpu_check`` on CPU): same blocks, narrower."""


def _tiny_video_resnet(conv_makers: list, two_plus_one_stem: bool) -> nn.Module:
    """torchvision's VideoResNet with one block per stage and :data:`TINY_WIDTHS`."""
    from torchvision.models.video.resnet import BasicBlock, BasicStem, VideoResNet

    model = VideoResNet(BasicBlock, conv_makers, [1, 1, 1, 1], BasicStem)
    width = TINY_WIDTHS[0]
    if two_plus_one_stem:  # R2Plus1dStem's (1, 7, 7) then (3, 1, 1) convolutions, narrower
        layers = [
            nn.Conv3d(3, 6, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
            nn.BatchNorm3d(6),
            nn.ReLU(True),
        ]
        layers += [nn.Conv3d(6, width, (3, 1, 1), 1, (1, 0, 0), bias=False)]
    else:  # BasicStem's (3, 7, 7) convolution, narrower
        layers = [nn.Conv3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False)]
    model.stem = nn.Sequential(*layers, nn.BatchNorm3d(width), nn.ReLU(True))
    model.inplanes = width
    for i, (planes, maker) in enumerate(zip(TINY_WIDTHS, conv_makers, strict=True)):
        setattr(
            model, f"layer{i + 1}", model._make_layer(BasicBlock, maker, planes, 1, stride=1 if i == 0 else 2)
        )
    model.fc = nn.Linear(TINY_WIDTHS[-1], 400)
    return model


def _tiny_r3d() -> nn.Module:
    from torchvision.models.video.resnet import Conv3DSimple

    return _tiny_video_resnet([Conv3DSimple] * 4, two_plus_one_stem=False)


def _tiny_mc3() -> nn.Module:
    from torchvision.models.video.resnet import Conv3DNoTemporal, Conv3DSimple

    return _tiny_video_resnet([Conv3DSimple] + [Conv3DNoTemporal] * 3, two_plus_one_stem=False)


def _tiny_r2plus1d() -> nn.Module:
    from torchvision.models.video.resnet import Conv2Plus1D

    return _tiny_video_resnet([Conv2Plus1D] * 4, two_plus_one_stem=True)


S3D_INCEPTIONS = [
    (64, 96, 128, 16, 32, 32),
    (128, 128, 192, 32, 96, 64),
    "pool",
    (192, 96, 208, 16, 48, 64),
    (160, 112, 224, 24, 64, 64),
    (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64),
    (256, 160, 320, 32, 128, 128),
    "pool2",
    (256, 160, 320, 32, 128, 128),
    (384, 192, 384, 48, 128, 128),
]
"""torchvision S3D's inception widths (b0, b1 mid, b1, b2 mid, b2, b3) and pools, in order."""


def _tiny_s3d() -> nn.Module:
    """torchvision's S3D layer sequence (same kernels, strides and pools) at 1/16 of the widths."""
    from functools import partial

    from torchvision.models.video.s3d import S3D, SepInceptionBlock3D, TemporalSeparableConv
    from torchvision.ops.misc import Conv3dNormActivation

    def narrow(width: int) -> int:
        return max(2, width // 16)

    norm = partial(nn.BatchNorm3d, eps=0.001, momentum=0.001)
    spatial_pool = partial(nn.MaxPool3d, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    layers = [
        TemporalSeparableConv(3, narrow(64), 7, 2, 3, norm),
        spatial_pool(),
        Conv3dNormActivation(narrow(64), narrow(64), kernel_size=1, stride=1, norm_layer=norm),
        TemporalSeparableConv(narrow(64), narrow(192), 3, 1, 1, norm),
        spatial_pool(),
    ]
    width = narrow(192)
    for entry in S3D_INCEPTIONS:
        if entry == "pool":
            layers.append(nn.MaxPool3d(kernel_size=(3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1)))
        elif entry == "pool2":
            layers.append(nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0)))
        else:
            b0, b1_mid, b1, b2_mid, b2, b3 = (narrow(w) for w in entry)
            layers.append(SepInceptionBlock3D(width, b0, b1_mid, b1, b2_mid, b2, b3, norm))
            width = b0 + b1 + b2 + b3
    model = S3D()
    model.features = nn.Sequential(*layers)
    model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Conv3d(width, 400, kernel_size=1))
    return model


def _adapt_s3d(backbone: Backbone) -> None:
    backbone.module.avgpool = nn.AdaptiveAvgPool3d(1)
    backbone.prepare = lambda clips: pad_frames(clips, multiple=2)


def pad_frames(clips: torch.Tensor, multiple: int) -> torch.Tensor:
    """``[n, C, T, H, W]`` with the last frame repeated until T is a multiple of ``multiple``."""
    missing = -clips.shape[2] % multiple
    if missing:
        clips = torch.cat([clips, clips[:, :, -1:].expand(-1, -1, missing, -1, -1)], dim=2)
    return clips


MVIT_CLIP = (16, 224)
"""Frames and side ``mvit_v2_s`` is built for (its relative position tables have these sizes)."""


def _tiny_mvit() -> nn.Module:
    """torchvision's MViT-v2 for 16 x 224 x 224 clips with two narrow blocks (pooling as mvit_v2_s)."""
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    def block(heads: int, cin: int, cout: int, stride_q: list[int], stride_kv: list[int]) -> MSBlockConfig:
        return MSBlockConfig(heads, cin, cout, [3, 3, 3], [3, 3, 3], stride_q, stride_kv)

    return MViT(
        spatial_size=(MVIT_CLIP[1], MVIT_CLIP[1]),
        temporal_size=MVIT_CLIP[0],
        block_setting=[block(1, 16, 16, [1, 1, 1], [1, 8, 8]), block(2, 16, 32, [1, 2, 2], [1, 4, 4])],
        residual_pool=True,
        residual_with_cls_embed=False,
        rel_pos_embed=True,
        proj_after_attn=True,
        stochastic_depth_prob=0.0,
    )


def _resample_clip(clips: torch.Tensor, frames: int, size: int) -> torch.Tensor:
    """``[n, C, T, H, W]`` -> ``[n, C, frames, size, size]``: nearest-index frames, bilinear pixels."""
    length = clips.shape[2]
    if length != frames:
        index = (torch.arange(frames, device=clips.device) * length) // frames
        clips = clips.index_select(2, index)
    if clips.shape[-2:] != (size, size):
        n, c, t, h, w = clips.shape
        flat = clips.transpose(1, 2).reshape(n * t, c, h, w)
        flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        clips = flat.view(n, t, c, size, size).transpose(1, 2)
    return clips


def _adapt_mvit(backbone: Backbone) -> None:
    backbone.prepare = lambda clips: _resample_clip(clips, *MVIT_CLIP)


def _tiny_swin3d() -> nn.Module:
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    return SwinTransformer3d(
        patch_size=[2, 4, 4],
        embed_dim=TINY_WIDTHS[0],
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=[8, 7, 7],
        stochastic_depth_prob=0.0,
    )


def _per_frame(name: str) -> Encoder:
    def build(spec: dict) -> Backbone:
        model = getattr(torchvision.models, name)(weights=None)
        if _is_tiny(spec):  # one block per stage, TINY_WIDTHS
            model.inplanes = TINY_WIDTHS[0]
            model.conv1 = nn.Conv2d(3, TINY_WIDTHS[0], 7, 2, 3, bias=False)
            model.bn1 = nn.BatchNorm2d(TINY_WIDTHS[0])
            block = type(model.layer1[0])
            for i, planes in enumerate(TINY_WIDTHS):
                setattr(
                    model, f"layer{i + 1}", model._make_layer(block, planes, 1, stride=1 if i == 0 else 2)
                )
            model.fc = nn.Linear(TINY_WIDTHS[-1] * block.expansion, 1000)
        feature_dim = model.fc.in_features
        model.fc = nn.Identity()
        blocks = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
        mean, std = _torchvision_mean_std(name)
        return Backbone(
            PerFrameImageNet(model), feature_dim, [f"image_net.{b}" for b in blocks], spec, mean, std
        )

    return Encoder(build, head=("fc.",), key_prefix="image_net.", weights=_torchvision_urls(name))


def _tiny(spec: dict) -> Backbone:
    return Backbone(TinyVideoNet(), 64, ["stem", "layer1", "layer2"], spec)


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
    narrow = {"stem_dim_outs": (8, 1)} if _is_tiny(spec) else {}  # 1/8 of the widths
    model = _pytorchvideo_hub().slowfast_r50(pretrained=False, **narrow)
    model.blocks[5].pool = nn.ModuleList([nn.AdaptiveAvgPool3d(1), nn.AdaptiveAvgPool3d(1)])
    feature_dim = _strip_pytorchvideo_head(model.blocks[6])
    blocks = [f"blocks.{i}" for i in range(5)]
    return Backbone(
        model, feature_dim, blocks, spec, PYTORCHVIDEO_MEAN, PYTORCHVIDEO_STD, prepare=slowfast_pathways
    )


def _x3d_s(spec: dict) -> Backbone:
    narrow = {"width_factor": 0.5, "depth_factor": 0.5, "head_dim_out": 64} if _is_tiny(spec) else {}
    model = _pytorchvideo_hub().x3d_s(pretrained=False, **narrow)
    head = model.blocks[5]
    head.pool.pool = nn.AdaptiveAvgPool3d(1)
    feature_dim = _strip_pytorchvideo_head(head)
    blocks = [f"blocks.{i}" for i in range(6)]
    return Backbone(model, feature_dim, blocks, spec, PYTORCHVIDEO_MEAN, PYTORCHVIDEO_STD)


def _pytorchvideo_url(model: str) -> str:
    hub = _pytorchvideo_hub()
    module = hub.slowfast if model.startswith("slowfast") else hub.x3d
    return module.checkpoint_paths[model]


TINY_VIDEOMAE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _videomae_config(spec: dict):
    from transformers import VideoMAEConfig

    if "hf_config" in spec:
        config = VideoMAEConfig(**spec["hf_config"])
    else:
        config = VideoMAEConfig(**(TINY_VIDEOMAE if _is_tiny(spec) else {}))
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


def _resnet3d_blocks(model: nn.Module) -> list[str]:
    return ["stem", "layer1", "layer2", "layer3", "layer4"]


ENCODERS: dict[str, Encoder] = {
    "tiny": Encoder(_tiny),
    "r3d_18": _torchvision_video("r3d_18", "fc", _resnet3d_blocks, _tiny_r3d),
    "r2plus1d_18": _torchvision_video("r2plus1d_18", "fc", _resnet3d_blocks, _tiny_r2plus1d),
    "mc3_18": _torchvision_video("mc3_18", "fc", _resnet3d_blocks, _tiny_mc3),
    "s3d": _torchvision_video(
        "s3d",
        "classifier",
        lambda m: [f"features.{i}" for i in range(len(m.features))],
        _tiny_s3d,
        _adapt_s3d,
    ),
    "mvit_v2_s": _torchvision_video(
        "mvit_v2_s",
        "head",
        lambda m: ["conv_proj"] + [f"blocks.{i}" for i in range(len(m.blocks))] + ["norm"],
        _tiny_mvit,
        _adapt_mvit,
    ),
    "swin3d_t": _torchvision_video(
        "swin3d_t",
        "head",
        lambda m: ["patch_embed"] + [f"features.{i}" for i in range(len(m.features))] + ["norm"],
        _tiny_swin3d,
    ),
    "resnet18": _per_frame("resnet18"),
    "resnet50": _per_frame("resnet50"),
    "slowfast_r50": Encoder(
        _slowfast_r50, head=("blocks.6.proj.",), weights={"KINETICS400": "pytorchvideo:slowfast_r50"}
    ),
    "x3d_s": Encoder(_x3d_s, head=("blocks.5.proj.",), weights={"KINETICS400": "pytorchvideo:x3d_s"}),
    "videomae": Encoder(_videomae, hugging_face="MCG-NJU/videomae-base"),
}
"""Encoder name -> registry entry."""


# --- pretrained weights, offline -------------------------------------------------------------------


def hub_checkpoint_dir() -> Path:
    """Where torchvision / pytorchvideo keep downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(name: str, weights: str) -> tuple[str, Path]:
    """(kind, path) of ``weights`` for encoder ``name``: ``hf`` folder, ``file`` or cached ``name``.

    Raises :class:`MissingWeightsError`, naming the weights, the command that fetches them on
    a machine with internet and where to put them, when they are not on this machine.
    """
    entry = ENCODERS[name]
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
        url = _pytorchvideo_url(url.partition(":")[2])
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


def _load_videomae_folder(folder: Path, spec: dict) -> Backbone:
    from transformers import VideoMAEConfig, VideoMAEModel

    config = VideoMAEConfig.from_pretrained(folder, local_files_only=True)
    config = _videomae_config(dict(spec, hf_config=config.to_dict()))
    model, info = VideoMAEModel.from_pretrained(
        folder, config=config, local_files_only=True, output_loading_info=True, dtype=torch.float32
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
        return _load_videomae_folder(path, spec)
    backbone = entry.build(spec)
    load_pretrained(backbone, entry, read_state_dict(path), str(path))
    return backbone


def apply_freezing(backbone: Backbone, policy: str, trainable_blocks: int) -> None:
    """``frozen``: nothing trains; ``top-k``: only the last ``trainable_blocks`` blocks; ``all``: everything."""
    if policy not in ("frozen", "top-k", "all"):
        raise ValueError(f"unknown freezing policy {policy!r}; choose frozen, top-k or all")
    if policy == "all":
        return
    backbone.module.requires_grad_(False)
    if policy == "top-k" and trainable_blocks > 0:
        for name in backbone.block_names[-trainable_blocks:]:
            backbone.module.get_submodule(name).requires_grad_(True)


# --- the item encoder ------------------------------------------------------------------------------


class _Checkpointed(nn.Module):
    """Runs ``block`` under activation checkpointing while training."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        if self.training and torch.is_grad_enabled():
            return checkpoint(self.block, *args, use_reentrant=False, **kwargs)
        return self.block(*args, **kwargs)


def _replace(module: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, new)


class VideoItemEncoder(nn.Module):
    """uint8 clips ``[n, T, 3, H, W]`` -> item embeddings ``[n, d]`` (backbone + Linear)."""

    needs_frames = True

    def __init__(self, backbone: Backbone, dim: int, activation_checkpointing: bool = False):
        super().__init__()
        self.backbone = backbone.module
        if activation_checkpointing:
            for name in backbone.block_names:
                _replace(self.backbone, name, _Checkpointed(self.backbone.get_submodule(name)))
        self.block_names = list(backbone.block_names)
        self.backbone_spec = dict(backbone.spec)
        self._prepare, self._readout = backbone.prepare, backbone.readout
        self.projection = nn.Linear(backbone.feature_dim, dim)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VideoItemEncoder:
        """Frozen blocks stay in eval mode (no dropout, no stochastic depth), and so does every frozen
        batch norm, so normalisation statistics stay as loaded."""
        super().train(mode)
        for name in self.block_names:
            block = self.backbone.get_submodule(name)
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
        return self

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[n, T, 3, H, W]`` -> backbone features ``[n, F]``."""
        clips = (frames.permute(0, 2, 1, 3, 4).float().div_(255) - self.mean) / self.std
        output = self.backbone(self._prepare(clips) if self._prepare else clips)
        return self._readout(output) if self._readout else output

    def forward(self, items: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        if frames is None:
            raise ValueError("a video encoder needs frames; this dataset or batch has none")
        return self.projection(self.features(frames))

    def spec(self) -> dict:
        return self.backbone_spec

    def recommender_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]
