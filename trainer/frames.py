"""Frame decoding and augmentation: JPEG bytes -> uint8 clips ``[T, 3, S, S]``.

On the CPU :func:`decode_frames` decodes (libjpeg-turbo, or Pillow's DCT downscale for large
frames), crops and flips in one pass per frame; with ``--decode-device cuda`` nvjpeg decodes
and :class:`FrameTransform` resizes and crops the tensors on the GPU, by the same rules.
Training uses a random crop (the same crop and flip for every frame of an item, so
motion stays consistent) and evaluation a centre crop; ``squash`` reproduces the
paper's code, which resizes to ``S x S`` ignoring aspect. Random choices come from a
generator seeded by (run seed, epoch, sample key), so a resumed run sees the same crops.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from dataformat.format import frame_field, frame_number

RESIZE_MARGIN = 8 / 7
"""Crops take ``S`` out of a shorter side of at most ``S * 8/7`` (the usual 256 -> 224)."""


@dataclass(frozen=True)
class FrameTransform:
    """How decoded frames become encoder input.

    Not ``squash``: the shorter side is brought to ``clamp(shorter side, S, S * 8/7)`` (larger
    frames are downscaled to ``S * 8/7``, smaller than ``S`` upscaled to ``S``, frames in between
    are left as they are: a crop margin is never made by upscaling), then an ``S x S`` crop is
    taken (random in training, centred in evaluation). Frames stored at exactly ``S`` are
    therefore used whole; store them at ``S * 8/7`` to get crop jitter in training.
    """

    size: int
    squash: bool = False
    train: bool = False
    augment: bool = True

    @property
    def decode_size(self) -> int:
        """Smallest frame side this transform needs (lets the JPEG decoder downscale for free)."""
        return self.size if self.squash else round(self.size * RESIZE_MARGIN)

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a ``width x height`` frame is resized to before the crop."""
        if self.squash:
            return self.size, self.size
        short = min(width, height)
        target = min(max(short, self.size), round(self.size * RESIZE_MARGIN))
        if target == short:
            return width, height
        scale = target / short
        return (target, round(height * scale)) if width == short else (round(width * scale), target)

    def crop_origin(self, width: int, height: int, generator: torch.Generator | None) -> tuple[int, int]:
        """(left, top) of the ``S x S`` crop in a resized ``width x height`` frame (2 draws in training)."""
        if self.train and self.augment:
            top = int(torch.randint(0, height - self.size + 1, (), generator=generator))
            left = int(torch.randint(0, width - self.size + 1, (), generator=generator))
            return left, top
        return (width - self.size) // 2, (height - self.size) // 2

    def flip(self, generator: torch.Generator | None) -> bool:
        """Whether to mirror the clip (1 draw in training)."""
        return self.train and self.augment and bool(torch.rand((), generator=generator) < 0.5)

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``clip``: uint8 ``[T, 3, H, W]`` (any strides, any device) -> contiguous uint8 ``[T, 3, S, S]``."""
        height, width = clip.shape[-2:]
        new_width, new_height = self.resized(width, height)
        if (new_width, new_height) != (width, height):
            clip = F.resize(clip, [new_height, new_width], antialias=True)
        left, top = self.crop_origin(new_width, new_height, generator)
        clip = clip[..., top : top + self.size, left : left + self.size]
        return (clip.flip(-1) if self.flip(generator) else clip).contiguous()


def decode_frames(
    jpegs: list[bytes], transform: FrameTransform, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One item's JPEG frames -> contiguous uint8 ``[T, 3, S, S]`` on the CPU, as ``transform`` makes them.

    Frames whose shorter side is at least twice what the transform needs are decoded by Pillow
    downscaled in the DCT (``draft``) and resized + cropped in one ``resize`` with a source box;
    others (the usual case: frames stored near the training size) by libjpeg-turbo through
    ``torchvision.io.decode_jpeg`` (about 3x faster than Pillow here), resized only if the
    transform says so. Either way one strided copy per frame lays it out in the output with the
    crop and flip. The crop and flip are drawn once per item, as in :meth:`FrameTransform.__call__`.
    """
    width, height = jpeg_size(jpegs[0])
    new_width, new_height = transform.resized(width, height)
    left, top = transform.crop_origin(new_width, new_height, generator)
    flip = transform.flip(generator)
    size = transform.size
    out = np.empty((len(jpegs), 3, size, size), dtype=np.uint8)
    if min(width, height) >= 2 * transform.decode_size:
        frames = [
            _decode_downscaled(data, transform, (width, height), (new_width, new_height), left, top)
            for data in jpegs
        ]
        for t, frame in enumerate(frames):
            out[t] = (frame[:, ::-1] if flip else frame).transpose(2, 0, 1)
        return torch.from_numpy(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read-only buffers; torchvision 0.29 points to torchcodec
        from torchvision.io import ImageReadMode, decode_jpeg

        frames = decode_jpeg(
            [torch.frombuffer(data, dtype=torch.uint8) for data in jpegs], mode=ImageReadMode.RGB
        )
    for t, frame in enumerate(frames):
        if frame.shape[1:] != (height, width):
            raise ValueError(f"frame {t} is {tuple(frame.shape[1:])}, frame 0 is {(height, width)}")
        if (new_width, new_height) != (width, height):
            frame = F.resize(frame, [new_height, new_width], antialias=True)
        window = frame.numpy()[:, top : top + size, left : left + size]
        out[t] = window[:, :, ::-1] if flip else window
    return torch.from_numpy(out)


def _decode_downscaled(
    data: bytes,
    transform: FrameTransform,
    source: tuple[int, int],
    resized: tuple[int, int],
    left: int,
    top: int,
) -> np.ndarray:
    """Pillow decode of a large frame, downscaled in the DCT, then resized + cropped to ``S x S`` (HWC)."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (transform.decode_size, transform.decode_size))  # never below the needed size
    image = image.convert("RGB") if image.mode != "RGB" else image
    width, height = image.size  # after the DCT downscale
    if round(width * source[1] / height) != source[0]:
        raise ValueError(f"frame is {image.size} after downscaling, frame 0 is {source}")
    scale_x, scale_y = width / resized[0], height / resized[1]
    size = transform.size
    box = (left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None))


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header, without decoding; raises if ``data`` is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("frame is not a JPEG")
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            raise ValueError("corrupt JPEG header")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    raise ValueError("JPEG without a frame header")


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
    """The JPEG frames of a webdataset sample whose fields start with ``prefix``, in frame order.

    ``prefix``: ``ITEM_FRAME_PREFIX`` for an item sample, ``train_frame_prefix(item_index)`` for
    one item of a train sample; the field names are the format's (``dataformat.format.frame_field``).
    """
    found = {}
    for name, value in sample.items():
        index = frame_number(name, prefix)
        if index is not None:
            found[index] = value
    if not found:
        raise ValueError(f"{sample.get('__key__')}: no frames named {frame_field(prefix, 'N')}")
    if sorted(found) != list(range(len(found))):
        raise ValueError(
            f"{sample.get('__key__')}: frames {frame_field(prefix, 'N')} are not numbered 0..{len(found) - 1}"
        )
    return [found[i] for i in range(len(found))]
