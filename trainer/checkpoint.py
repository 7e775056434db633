"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts: model,
optimizer, scheduler and grad-scaler state, RNG states, the data stream position,
the run config and the dataset version. It is written to a temporary file in the
same folder and renamed over the target, so a kill mid-write leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path

import torch

from trainer.errors import CheckpointError

LAST = "last.pt"
BEST = "best.pt"


def save_atomic(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (tmp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            torch.save(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> dict:
    """A checkpoint saved by :func:`save_atomic`, loaded without unpickling arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


EVALUATE_KEYS = ("model", "config", "dataset_version", "dataset_root", "encoder_spec")
"""What every checkpoint of a run holds (``best.pt`` and ``last.pt``); ``videorec evaluate`` needs these."""
RESUME_KEYS = (
    *EVALUATE_KEYS,
    *("optimizer", "scheduler", "scaler", "rng", "step", "position", "best"),
    *("skipped_samples", "failed_reads", "metrics_lines"),
)
"""What ``last.pt`` holds besides, to continue a run."""
NEWER_RESUME_KEYS = ("schedule",)
"""What ``last.pt`` holds since later releases (a resume reads an older checkpoint without them)."""


def read(path: str | Path, needs: tuple[str, ...] = EVALUATE_KEYS, fix: str = "") -> dict:
    """The checkpoint at ``path``, which must hold ``needs``.

    Raises:
        CheckpointError: it does not exist, does not load (damaged or cut short), or is not a videorec
            checkpoint; the message ends with ``fix`` when given.
    """
    path = Path(path)
    fix = f"; {fix}" if fix else ""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist{fix}")
    try:
        state = load(path)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} does not load ({reason}): damaged or cut short{fix}"
        ) from None
    missing = [key for key in needs if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a videorec run checkpoint (it has no {', '.join(missing)}){fix}"
        )
    return state


def rng_state() -> dict:
    """Python and torch (CPU and CUDA) RNG states."""
    version, internal, gauss = random.getstate()
    state = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
