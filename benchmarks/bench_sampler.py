"""CPU seconds per video to take 5 middle frames: our sampler against the usual ways, in the same run.

Methods (all single-threaded decoders, all ending in the same 5 JPEGs where they produce images):

* ``ours``: :func:`transforms.decode.sampler.sample_video` (keyframe seek, non-reference frames skipped
  before the window, one conversion + resize per kept frame, JPEG).
* ``pyav_keyframe_seek``: a plain PyAV sampler: seek to the keyframe before the middle, decode every
  frame from there, same resize + JPEG (the baseline of the 0.75x target).
* ``pyav_linear``: decode every frame from the start with PyAV, keep the middle 5, same resize + JPEG.
* ``ffmpeg_ss``: ``ffmpeg -ss T -i video -frames:v 5`` (imageio-ffmpeg's binary) scaling to 256 and
  writing JPEGs; CPU of the child process.
* ``opencv_sequential``: the MicroLens script's way: OpenCV reads frames one by one from the start up
  to the header's frame count // 2 + 2, resizes, encodes (needs opencv-python-headless).
* ``torchcodec``: torchcodec's ``VideoDecoder(seek_mode="approximate")`` fetching the 5 frames by
  index, same resize + JPEG (only if torchcodec is installed and loads).

Videos: the real MicroLens files in ../shared/data/videos (if present) and two 144 s 720p30 videos
(HEVC via libx265 and H.264 via libx264, default GOPs) that this script generates once into a cache
folder (``--cache``, default ``$TMPDIR/videorec-bench-sampler``), never into the repository.

Usage::

    python -m benchmarks.bench_sampler [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

from transforms.decode.frame_render import encode_jpeg, frame_rotation, render_rgb
from transforms.decode.sampler import sample_video
from transforms.decode.types import SamplerConfig

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
LONG_SECONDS = 144
CONFIG = SamplerConfig()


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def ffmpeg_binary() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def generate_long_videos(cache: Path) -> list[Path]:
    """144 s (2.4 min) 720p30 HEVC and H.264 with the encoders' default GOPs (cached between runs)."""
    cache.mkdir(parents=True, exist_ok=True)
    made = []
    for codec, name in (
        ("libx265", f"long_hevc_720p_{LONG_SECONDS}s.mp4"),
        ("libx264", f"long_h264_720p_{LONG_SECONDS}s.mp4"),
    ):
        path = cache / name
        if not path.exists():
            partial = cache / f"partial-{name}"
            source = f"testsrc2=size=1280x720:rate=30:duration={LONG_SECONDS}"
            subprocess.run(
                [ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i", source, "-c:v", codec,
                 "-preset", "veryfast", "-pix_fmt", "yuv420p", str(partial)],
                check=True,
            )  # fmt: skip
            partial.rename(path)
        made.append(path)
    return made


def _render(frame: av.VideoFrame) -> bytes:
    """The same conversion, resize and JPEG as ours (square pixels assumed: true for these videos)."""
    return encode_jpeg(render_rgb(frame, frame_rotation(frame), 1.0, CONFIG), CONFIG.jpeg_quality)


def _open_single_threaded(path: Path):
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    return container, stream


def _middle(stream, container) -> float:
    if stream.duration:
        return float((stream.start_time or 0) * stream.time_base + stream.duration * stream.time_base / 2)
    return container.duration / av.time_base / 2


def pyav_keyframe_seek(path: Path) -> list[bytes]:
    """Seek to the keyframe before the middle, decode every frame to the window, same render."""
    container, stream = _open_single_threaded(path)
    with container:
        middle = _middle(stream, container)
        container.seek(int((middle - 0.2) / stream.time_base), stream=stream, backward=True)
        recent: list[av.VideoFrame] = []
        after = 0
        for frame in container.decode(stream):
            recent.append(frame)
            if frame.time > middle:
                after += 1
                if after == 2:
                    break
            recent = recent[-6:]
        chosen = recent[-5:]
        return [_render(frame) for frame in chosen]


def pyav_linear(path: Path) -> list[bytes]:
    """Decode every frame once, converting the 5 at the header's middle index (the cheapest linear way)."""
    container, stream = _open_single_threaded(path)
    with container:
        anchor = (stream.frames or 1) // 2
        out = []
        for index, frame in enumerate(container.decode(stream)):
            if anchor - 2 <= index <= anchor + 2:
                out.append(_render(frame))
        return out


def ffmpeg_ss(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        middle = _middle(stream, container)
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [ffmpeg_binary(), "-v", "error", "-threads", "1", "-ss", f"{middle - 2 / 30:.3f}", "-i", str(path),
             "-frames:v", "5", "-vf", "scale=-2:256,crop=256:256", "-q:v", "3", f"{out}/f%d.jpg"],
            check=True,
        )  # fmt: skip
        return [Path(out, name).read_bytes() for name in sorted(os.listdir(out))]


def opencv_sequential(path: Path) -> list[bytes]:
    """MicroLens-style: read frames one by one up to the header's count // 2 + 2."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    anchor = count // 2
    out = []
    for index in range(anchor + 3):
        ok, image = capture.read()
        if not ok:
            break
        if index >= anchor - 2:
            resized = cv2.resize(image, (256, 256))
            out.append(cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    capture.release()
    return out


def torchcodec_frames(path: Path) -> list[bytes]:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), seek_mode="approximate", num_ffmpeg_threads=1)
    anchor = decoder.metadata.num_frames // 2
    batch = decoder.get_frames_at(list(range(anchor - 2, anchor + 3)))
    out = []
    for image in batch.data:
        frame = av.VideoFrame.from_ndarray(image.permute(1, 2, 0).numpy(), format="rgb24")
        out.append(encode_jpeg(render_rgb(frame, 0, 1.0, CONFIG), CONFIG.jpeg_quality))
    return out


def ours(path: Path) -> list[bytes]:
    return sample_video(str(path), CONFIG).frames


def available_methods() -> dict[str, Callable[[Path], list[bytes]]]:
    methods = {
        "ours": ours,
        "pyav_keyframe_seek": pyav_keyframe_seek,
        "pyav_linear": pyav_linear,
        "ffmpeg_ss": ffmpeg_ss,
    }
    try:
        import cv2  # noqa: F401

        methods["opencv_sequential"] = opencv_sequential
    except ImportError:
        print("opencv-python-headless not installed: skipping opencv_sequential", file=sys.stderr)
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401

        methods["torchcodec"] = torchcodec_frames
    except (ImportError, OSError, RuntimeError) as exc:
        print(f"torchcodec unavailable ({type(exc).__name__}): skipping", file=sys.stderr)
    return methods


def measure_round_robin(methods: dict[str, Callable[[Path], list[bytes]]], path: Path, repeats: int) -> dict:
    """Median CPU seconds (this process + children) per method over ``repeats`` rounds.

    Each round runs every method once, so a busy moment on a shared machine hits all methods alike;
    one warm-up call per method comes first.
    """
    for method in methods.values():
        method(path)
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            before = cpu_seconds()
            method(path)
            samples[name].append(cpu_seconds() - before)
    return {name: round(statistics.median(values), 4) for name, values in samples.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="CPU s/video of the frame sampler vs baselines")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "videorec-bench-sampler")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--skip-long", action="store_true", help="only the real MicroLens files")
    args = parser.parse_args(argv)

    videos = sorted(SHARED_VIDEOS.glob("microlens50k_*.mp4")) if SHARED_VIDEOS.exists() else []
    if not args.skip_long:
        started = time.monotonic()
        videos += generate_long_videos(args.cache)
        print(f"long videos ready in {time.monotonic() - started:.0f} s ({args.cache})", file=sys.stderr)
    methods = available_methods()
    results: dict[str, dict[str, float]] = {}
    for path in videos:
        results[path.name] = measure_round_robin(methods, path, args.repeats)
        sample = sample_video(str(path), CONFIG)
        results[path.name]["ours_bytes_read_share"] = round(
            sample.meta["bytes_read"] / sample.meta["file_size"], 3
        )
        results[path.name]["same_frames_as_keyframe_seek"] = sample.frames == pyav_keyframe_seek(path)
        print(path.name, json.dumps(results[path.name]), file=sys.stderr, flush=True)

    names = list(methods)
    print("| video | " + " | ".join(names) + " | ours / keyframe seek | sequential / ours | bytes read |")
    print("|---" * (len(names) + 4) + "|")
    for video, row in results.items():
        ratio = row["ours"] / row["pyav_keyframe_seek"]
        speedup = row["opencv_sequential"] / row["ours"] if "opencv_sequential" in row else float("nan")
        cells = " | ".join(f"{row[name]:.3f}" for name in names)
        print(f"| {video} | {cells} | {ratio:.2f}x | {speedup:.1f}x | {row['ours_bytes_read_share']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
