"""Backbones from torchvision: the video nets and the per-frame image ResNets, with tiny variants.

Every one accepts the mission's clips (5 frames, 112 or 224 px); where an architecture needs
something else, its ``prepare`` step adapts the clip and its head pools adaptively:

- ``s3d``: the head's fixed ``(2, 7, 7)`` average pool becomes adaptive (5 frames at 224 px
  leave 1 x 7 x 7 features, at 112 px 1 x 3 x 3), and an odd clip repeats its last frame
  (5 -> 6): on the CPU, torch 2.14.1's oneDNN weight gradient of s3d's first temporal
  convolution (kernel 7, stride 2, 64 channels) corrupts the heap for exactly 5 frames
  (3, 4 and 6 to 13 are fine), and the stride-2 convolution then sees whole frame pairs;
- ``mvit_v2_s``: built as torchvision builds it (16 x 224 x 224, so pretrained relative
  position tables load unchanged), then run on the clip as it comes: its token grid is the
  run's (5 frames at 112 px: 3 x 28 x 28 tokens, against 8 x 56 x 56 for a clip resampled to
  16 x 224, 10.7x fewer), and torchvision interpolates the relative position tables to that grid.

The ``tiny`` variants keep each architecture's block types, clip adaptations and heads,
narrower and shallower (:data:`~trainer.models.backbone.TINY_WIDTHS`), for CPU tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from trainer.models.backbone import TINY_WIDTHS, Backbone, Encoder, is_tiny, pad_frames


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


def _torchvision_video(
    name: str,
    head: str,
    blocks: Callable[[nn.Module], list[str]],
    tiny: Callable[[], nn.Module],
    adapt: Callable[[Backbone], None] | None = None,
) -> Encoder:
    def build(spec: dict) -> Backbone:
        model = tiny() if is_tiny(spec) else getattr(torchvision.models.video, name)(weights=None)
        feature_dim = _head_in_features(getattr(model, head))
        setattr(model, head, nn.Identity())
        mean, std = _torchvision_mean_std(name)
        backbone = Backbone(model, feature_dim, blocks(model), spec, mean, std)
        if adapt is not None:
            adapt(backbone)
        return backbone

    return Encoder(build, head=(f"{head}.",), weights=_torchvision_urls(name))


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


def mvit_token_grid(conv_proj: nn.Conv3d, frames: int, size: int) -> tuple[int, tuple[int, int]]:
    """(time, (height, width)) of the tokens MViT's patch convolution makes of a ``frames`` x ``size`` clip."""
    t, h, w = (
        (n + 2 * pad - kernel) // stride + 1
        for n, kernel, stride, pad in zip(
            (frames, size, size), conv_proj.kernel_size, conv_proj.stride, conv_proj.padding, strict=True
        )
    )
    return t, (h, w)


def _adapt_mvit(backbone: Backbone) -> None:
    """Run on the run's clips (``spec``'s frames and size): MViT takes its token grid from
    ``pos_encoding`` (no absolute positions with relative ones), and interpolates its relative
    position tables to whatever grid it is given."""
    frames, size = backbone.spec["num_frames"], backbone.spec["frame_size"]
    grid = backbone.module.pos_encoding
    grid.temporal_size, grid.spatial_size = mvit_token_grid(backbone.module.conv_proj, frames, size)
    backbone.prepare = lambda clips: _resample_clip(clips, frames, size)


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
        if is_tiny(spec):  # one block per stage, TINY_WIDTHS
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


def _resnet3d_blocks(model: nn.Module) -> list[str]:
    return ["stem", "layer1", "layer2", "layer3", "layer4"]


TORCHVISION_ENCODERS: dict[str, Encoder] = {
    "r3d_18": _torchvision_video("r3d_18", "fc", _resnet3d_blocks, _tiny_r3d),
    "r2plus1d_18": _torchvision_video("r2plus1d_18", "fc", _resnet3d_blocks, _tiny_r2plus1d),
    "mc3_18": _torchvision_video("mc3_18", "fc", _resnet3d_blocks, _tiny_mc3),
    "s3d": _torchvision_video(
        "s3d",
        "classifier",
        lambda m: [
            f"features.{i}"
            for i, layer in enumerate(m.features)
            if next(layer.parameters(), None) is not None
        ],
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
}
"""Registry name -> entry, for the torchvision backbones."""
