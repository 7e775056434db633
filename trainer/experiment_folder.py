"""The folder of ``videorec experiment``: it writes only into a folder it owns, and results stay tied
to their inputs.

A folder is the experiment's when it holds ``experiment.json``, which names the dataset version and
the settings every arm was trained with. :func:`claim_folder` takes a new or empty folder (writing
that file), resumes one whose ``experiment.json`` matches the run, and refuses anything else: a
folder with other files (``results.csv`` there may be someone else's) or one made with another
dataset version or other settings (its finished arms would be mixed into the new table). With
``--restart`` a folder of the experiment is emptied of what the experiment wrote and started over.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from trainer.errors import UsageError

EXPERIMENT_FILE = "experiment.json"
OWN_FILES = (EXPERIMENT_FILE, "results.csv", "results.md", "results.png")
ARMS = "arms"
ARM_FILES = re.compile(
    r"[^/]+/(arm\.json|step\.json|results\.json|metrics\.jsonl|features\.npy|checkpoints/(best|last)\.pt)"
)
"""What an arm's run writes in ``arms/`` (relative paths): ``--restart`` deletes these and no other file."""


def claim_folder(out: Path, record: dict, restart: bool) -> None:
    """Make ``out`` this run's experiment folder (``record``: dataset version and settings).

    Raises:
        UsageError: ``out`` is a file, holds files the experiment did not write, or was made with another
            dataset version or other settings (without ``restart``).
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} is a file; give a new or empty folder")
    marker = out / EXPERIMENT_FILE
    if out.is_dir() and any(out.iterdir()):
        earlier = _read(marker)
        if earlier is None:
            example = sorted(p.name for p in out.iterdir())[0]
            raise UsageError(
                f"--output {out} holds files videorec experiment did not write (e.g. {example}); "
                "give a new or empty folder"
            )
        if earlier != record:
            if not restart:
                raise UsageError(
                    f"experiment folder {out} holds arms of {_describe(earlier, record)}; pass --restart to "
                    "start over there, or choose another --output"
                )
            _empty(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _read(marker: Path) -> dict | None:
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "dataset_version" in record else None


def _describe(earlier: dict, now: dict) -> str:
    if earlier.get("dataset_version") != now.get("dataset_version"):
        return (
            f"dataset version {earlier.get('dataset_version')!r}, but --data is version "
            f"{now.get('dataset_version')!r}"
        )
    before, after = earlier.get("settings", {}), now.get("settings", {})
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return (
        "other settings (" + ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed) + ")"
    )


def _empty(out: Path) -> None:
    """Delete what the experiment wrote in ``out`` (and nothing else: a file of another name stays, and
    so do the folders that hold one)."""
    for name in OWN_FILES:
        (out / name).unlink(missing_ok=True)
    arms = out / ARMS
    for path in sorted(arms.rglob("*"), reverse=True):  # a folder's files before the folder
        if path.is_dir():
            with contextlib.suppress(OSError):  # not empty: it holds someone else's file
                path.rmdir()
        elif ARM_FILES.fullmatch(path.relative_to(arms).as_posix()):
            path.unlink()
    with contextlib.suppress(OSError):
        arms.rmdir()


def arm_matches(record: dict, dataset_version: str, steps: list[list[str]]) -> bool:
    """True when an arm's ``arm.json`` was made from ``dataset_version`` with ``steps`` (the ``--data``
    path aside: the version says which data it was)."""
    recorded = record.get("steps")
    if record.get("dataset_version") != dataset_version or not isinstance(recorded, list):
        return False
    return [_without_data(step) for step in recorded] == [_without_data(step) for step in steps]


def _without_data(step) -> list:
    step = list(step) if isinstance(step, list) else [step]
    return [None if k and step[k - 1] == "--data" else arg for k, arg in enumerate(step)]
