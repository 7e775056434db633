"""Frame decoding and augmentation: JPEG bytes -> uint8 clips ``[T, 3, S, S]``.

On the CPU :func:`decode_frames` does it in one fused Pillow pass; with ``--decode-device
cuda`` nvjpeg decodes and :class:`FrameTransform` resizes and crops the tensors on the GPU.
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
    return (clip.flip(-1) if flip else clip).contiguous()


def decode_frames(
    jpegs: list[bytes], transform: FrameTransform, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One item's JPEG frames -> contiguous uint8 ``[T, 3, S, S]`` on the CPU, as ``transform`` would make them.

    Fused for speed: Pillow decodes each frame downscaled in the DCT (``draft``), then one
    ``resize`` with a source box does the resize and the crop together, straight to ``S x S``
    (the crop window of "shorter side to ``S * 8/7``, then crop ``S``" mapped back onto the
    source), and one strided copy lays the frame out channels-first (with the flip). The crop
    and flip are drawn once per item, in the same order as :meth:`FrameTransform.__call__`.
    """
    size = transform.size
    images = [_open_jpeg(data, transform.decode_size) for data in jpegs]
    box = _source_box(images[0].size, transform, generator)
    flip = transform.train and transform.augment and bool(torch.rand((), generator=generator) < 0.5)
    out = np.empty((len(images), 3, size, size), dtype=np.uint8)
    for t, image in enumerate(images):
        if image.size != (size, size) or box is not None:
            image = image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        array = np.asarray(image)
        out[t] = (array[:, ::-1] if flip else array).transpose(2, 0, 1)
    return torch.from_numpy(out)


def _open_jpeg(data: bytes, min_size: int) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    if image.format != "JPEG":
        raise ValueError(f"frame is {image.format}, not JPEG")
    image.draft("RGB", (min_size, min_size))  # DCT-domain downscale, never below min_size
    return image.convert("RGB") if image.mode != "RGB" else image


def _source_box(
    source: tuple[int, int], transform: FrameTransform, generator: torch.Generator | None
) -> tuple[float, float, float, float] | None:
    """The crop window in source pixels (``None``: the whole frame, squashed to ``S x S``)."""
    if transform.squash:
        return None
    width, height = source
    short = min(width, height)
    target = round(transform.size * RESIZE_MARGIN)
    scale = short / target  # source pixels per resized pixel
    resized_w, resized_h = (
        (target, round(height / scale)) if width == short else (round(width / scale), target)
    )
    if transform.train and transform.augment:
        top = int(torch.randint(0, resized_h - transform.size + 1, (), generator=generator))
        left = int(torch.randint(0, resized_w - transform.size + 1, (), generator=generator))
    else:
        top, left = (resized_h - transform.size) // 2, (resized_w - transform.size) // 2
    return (left * scale, top * scale, (left + transform.size) * scale, (top + transform.size) * scale)


def sample_generator(seed: int, epoch: int, key: str) -> torch.Generator:
    """A generator for one sample's augmentation, independent of reading order and worker."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{epoch}/{key}".encode()) + (seed << 32))


def decode_clip_on_device(jpegs: list[bytes], device: str) -> torch.Tensor:
    """Decode one item's JPEG frames on a CUDA device with nvjpeg (``torchvision.io.decode_jpeg``)
    to uint8 ``[T, 3, H, W]``; :meth:`FrameTransform.__call__` then resizes and crops them there."""
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
