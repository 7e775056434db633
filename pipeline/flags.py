"""Command-line pieces the ``videorec`` commands share: one-line errors, sizes, and the frame flags.

Beam-free and torch-free, so ``videorec frames`` and ``videorec ingest`` parse frames the same way
without importing either. :class:`Parser` prints a bad command line as one line and exits 2;
:func:`add_frame_flags` adds the frame-sampling flags (the same names in both commands) and
:func:`sampler_settings` turns the parsed flags into ``SamplerConfig`` keyword arguments.
"""

from __future__ import annotations

import argparse
import sys

from transforms.decode.types import BACKENDS, RESIZE_MODES, SamplerConfig

USAGE_ERROR = 2
"""Exit status of a command whose flags or inputs are wrong (nothing was started or written)."""


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help when it has a default other than None/False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        default = action.default
        if isinstance(default, tuple):
            default = "x".join(str(v) for v in default)
        return f"{text} (default: {default})"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE (see PROG --help)``, exit 2.

    Defaults are shown in ``--help`` after each flag's help text (:class:`HelpFormatter`).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def parse_size(text: str) -> tuple[int, int]:
    """``"224"`` -> ``(224, 224)``; ``"256x320"`` -> height 256, width 320.

    Raises:
        argparse.ArgumentTypeError: anything else (argparse reports it as a one-line error).
    """
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(
            f"size must be N or HxW with positive integers (64, 64x32), got {text!r}"
        )
    return parts[0], parts[1]


def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _quality(text: str) -> int:
    value = _at_least(1)(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be 1..100, got {value}")
    return value


positive_int = _at_least(1)
non_negative_int = _at_least(0)
positive_float = _positive_float


INGEST_DECODE_THREADS = 1
"""Decoder threads per video in ``videorec ingest`` unless ``--decode-threads`` says otherwise. Ingest
runs a worker per core, so threads inside one video can only compete with the other workers. On 2
loaded cores no setting decoded clearly more videos per CPU-second (FFmpeg's choice within 1-4 % of
one thread, inside the round-to-round noise) while FFmpeg's threads cost 20x the context switches
and grow in number with the cores (``benchmarks/bench_decode_threads.py``, docs/SAMPLER.md).
``videorec frames`` keeps FFmpeg's choice (``SamplerConfig``'s default, 0)."""


def add_frame_flags(
    parser: argparse.ArgumentParser, *, old_names: bool = False, threads: int | None = None
) -> None:
    """The frame-sampling flags of ``videorec frames`` and ``videorec ingest``: same names, same defaults
    but ``threads`` (the decoder threads the command uses when the flag is not given).

    Each flag's value is None when not given (``SamplerConfig``'s default, shown in the help, applies).
    ``old_names`` also accepts the spellings ``videorec frames`` used before (``--stride``, ``--size``,
    ``--quality``, ``--backend``, ``--threads``, ``--timeout``, ``--max-memory-mb``).
    """
    defaults = SamplerConfig(threads=SamplerConfig().threads if threads is None else threads)
    group = parser.add_argument_group("frames")

    def flag(name: str, old: str | None, dest: str, default, help_: str, **kwargs) -> None:
        names = [name, old] if old_names and old else [name]
        shown = "x".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(*names, dest=dest, default=None, help=f"{help_} (default: {shown})", **kwargs)

    flag(
        "--num-frames",
        None,
        "num_frames",
        defaults.num_frames,
        "frames per video",
        type=positive_int,
        metavar="N",
    )
    flag(
        "--frame-stride",
        "--stride",
        "frame_stride",
        defaults.stride,
        "distance between the chosen frames, in frames (1: consecutive frames)",
        type=positive_int,
        metavar="S",
    )
    flag(
        "--frame-size",
        "--size",
        "frame_size",
        defaults.size,
        "frame size in pixels: N for N x N, or HxW",
        type=parse_size,
        metavar="N|HxW",
    )
    flag(
        "--resize",
        None,
        "resize",
        defaults.resize,
        "center-crop keeps the aspect and crops the middle; squash ignores the aspect (the MicroLens "
        "paper's choice); pad keeps the aspect and pads with black",
        choices=RESIZE_MODES,
    )
    flag(
        "--jpeg-quality",
        "--quality",
        "jpeg_quality",
        defaults.jpeg_quality,
        "JPEG quality of the frames, 1..100",
        type=_quality,
        metavar="Q",
    )
    flag(
        "--sampler-backend",
        "--backend",
        "sampler_backend",
        defaults.backend,
        "decoder: pyav (FFmpeg inside Python) or ffmpeg (the ffmpeg command-line tool)",
        choices=BACKENDS,
    )
    flag(
        "--decode-threads",
        "--threads",
        "decode_threads",
        defaults.threads,
        "decoder threads per video; 0: FFmpeg's choice, as a plain PyAV decode loop"
        + ("; ingest runs a worker per core and decodes each video on one thread" if threads else ""),
        type=non_negative_int,
        metavar="N",
    )
    flag(
        "--decode-timeout",
        "--timeout",
        "decode_timeout",
        defaults.timeout_s,
        "seconds one video may take; slower ones fail as timeout",
        type=positive_float,
        metavar="S",
    )
    flag(
        "--decode-max-memory-mb",
        "--max-memory-mb",
        "decode_max_memory_mb",
        defaults.max_memory_mb,
        "memory (MiB) one video's decoder may use; more fails as memory",
        type=positive_int,
        metavar="MB",
    )


SAMPLER_FIELDS = {
    "num_frames": "num_frames",
    "frame_stride": "stride",
    "frame_size": "size",
    "resize": "resize",
    "jpeg_quality": "jpeg_quality",
    "sampler_backend": "backend",
    "decode_threads": "threads",
    "decode_timeout": "timeout_s",
    "decode_max_memory_mb": "max_memory_mb",
}
"""Destination of each frame flag -> the ``SamplerConfig`` field it sets."""


def sampler_settings(args: argparse.Namespace) -> dict:
    """``SamplerConfig`` keyword arguments of the frame flags that were given (:func:`add_frame_flags`)."""
    return {
        field: getattr(args, dest)
        for dest, field in SAMPLER_FIELDS.items()
        if getattr(args, dest) is not None
    }
