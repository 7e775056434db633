"""The ``videorec`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``main(argv: list[str]) -> int``.
Modules are imported only when their subcommand runs, so ``videorec ingest`` never
imports torch and ``videorec --help`` stays fast.
"""

from __future__ import annotations

import importlib
import signal
import sys

from logsetup import configure_logging

# name -> (module exposing main(argv), one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("pipeline.synth.command", "generate a synthetic MicroLens-format dataset (videos + pairs)"),
    "frames": ("pipeline.frames", "sample the middle frames of video files into JPEGs"),
    "ingest": ("pipeline.main", "run the Beam ingest job: interactions + videos -> dataset version"),
    "inspect": ("pipeline.inspect", "validate a dataset version and print its manifest summary"),
    "train": ("trainer.train", "train VideoRec (video encoder + SASRec) on streamed shards"),
    "evaluate": ("trainer.evaluate_cli", "score a checkpoint with full-ranking HR@K / NDCG@K"),
    "extract": ("trainer.extract", "extract frozen item features for the 'frozen' baseline"),
    "experiment": ("trainer.experiment", "run the paper's comparison (popularity, id, frozen, end to end)"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [
        "usage: videorec <command> [options]",
        "",
        "Turn raw micro-videos and interaction logs into WebDataset training data and train VideoRec.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run 'videorec <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(version("videorec-pipeline"))
        except PackageNotFoundError:
            print("unknown (not installed)")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"videorec: unknown command {name!r}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module_name, _ = SUBCOMMANDS[name]
    configure_logging()
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name in ("torch", "torchvision"):
                print(
                    f"videorec {name}: needs the training extra; install it with "
                    "pip install 'videorec-pipeline[train]'",
                    file=sys.stderr,
                )
                return 2
            raise
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print(f"videorec {name}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
