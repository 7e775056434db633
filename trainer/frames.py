"""Frame decoding and augmentation: JPEG bytes -> uint8 clips ``[T, 3, S, S]``.

Training uses a random crop (the same crop and flip for every frame of an item, so
motion stays consistent) and evaluation a centre crop; ``squash`` reproduces the
paper's code, which resizes to ``S x S`` ignoring aspect. Random choices come from a
generator seeded by (run seed, epoch, sample key), so a resumed run sees the same crops.
"""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

RESIZE_MARGIN = 8 / 7
"""Train/eval crops take ``S`` out of a shorter side resized to ``S * 8/7`` (the usual 256 -> 224)."""


@dataclass(frozen=True)
class FrameTransform:
    """How decoded frames become encoder input."""

    size: int
    squash: bool = False
    train: bool = False
    augment: bool = True

    @property
    def decode_size(self) -> int:
        """Smallest frame side this transform needs (lets the JPEG decoder downscale for free)."""
        return self.size if self.squash else round(self.size * RESIZE_MARGIN)

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``clip``: uint8 ``[T, 3, H, W]`` (any strides) -> contiguous uint8 ``[T, 3, size, size]``."""
        if self.squash:
            clip = _resize(clip, [self.size, self.size])
        else:
            clip = self._crop(_resize(clip, round(self.size * RESIZE_MARGIN)), generator)
        flip = self.train and self.augment and bool(torch.rand((), generator=generator) < 0.5)
        return _contiguous(clip, flip)

    def _crop(self, clip: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        height, width = clip.shape[-2:]
        if self.train and self.augment:
            top = int(torch.randint(0, height - self.size + 1, (), generator=generator))
            left = int(torch.randint(0, width - self.size + 1, (), generator=generator))
        else:
            top, left = (height - self.size) // 2, (width - self.size) // 2
        return clip[..., top : top + self.size, left : left + self.size]


def _resize(clip: torch.Tensor, size: int | list[int]) -> torch.Tensor:
    height, width = clip.shape[-2:]
    wanted = size if isinstance(size, list) else None
    if wanted is None:
        short, long_ = (height, width) if height <= width else (width, height)
        if short == size:
            return clip
    elif [height, width] == wanted:
        return clip
    return F.resize(clip, size, antialias=True)


def _contiguous(clip: torch.Tensor, flip: bool) -> torch.Tensor:
    """One copy into ``[T, 3, H, W]`` layout (with the flip): numpy's strided uint8 copy is far
    faster than torch's on the CPU, and decoded frames arrive channels-last."""
    if clip.device.type != "cpu":
        return (clip.flip(-1) if flip else clip).contiguous()
    array = clip.numpy()
    return torch.from_numpy(np.ascontiguousarray(array[..., ::-1] if flip else array))


def sample_generator(seed: int, epoch: int, key: str) -> torch.Generator:
    """A generator for one sample's augmentation, independent of reading order and worker."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{epoch}/{key}".encode()) + (seed << 32))


def _decode_cpu(data: bytes, min_size: int | None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "JPEG":
            raise ValueError(f"frame is {image.format}, not JPEG")
        if min_size:
            image.draft("RGB", (min_size, min_size))  # DCT-domain downscale, never below min_size
        return np.asarray(image.convert("RGB"))


def decode_clip(jpegs: list[bytes], device: str = "cpu", min_size: int | None = None) -> torch.Tensor:
    """Decode one item's JPEG frames to uint8 ``[T, 3, H, W]``.

    On the CPU with Pillow (downscaled while decoding when ``min_size`` allows); on a CUDA
    device with nvjpeg through ``torchvision.io.decode_jpeg``.
    """
    if device == "cpu":  # channels-last view, made contiguous by the transform's single copy
        return torch.from_numpy(np.stack([_decode_cpu(data, min_size) for data in jpegs])).permute(0, 3, 1, 2)
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to torchcodec
        return torch.stack(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))


def frames_of(sample: dict, prefix: str) -> list[bytes]:
    """The JPEG frames ``{prefix}0.jpg, {prefix}1.jpg, ...`` of a webdataset sample, in frame order."""
    found = {}
    for name, value in sample.items():
        if name.startswith(prefix) and name.endswith(".jpg"):
            index = name[len(prefix) : -len(".jpg")]
            if index.isdigit():
                found[int(index)] = value
    if not found:
        raise ValueError(f"{sample.get('__key__')}: no frames named {prefix}N.jpg")
    if sorted(found) != list(range(len(found))):
        raise ValueError(
            f"{sample.get('__key__')}: frames {prefix}N.jpg are not numbered 0..{len(found) - 1}"
        )
    return [found[i] for i in range(len(found))]
