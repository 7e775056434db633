"""What the trainer's commands refuse, and the exit status each refusal gets.

Code below the command line raises these; ``videorec train``, ``evaluate`` and ``extract`` (and
``torchrun -m trainer.train``) catch them in :func:`run_command` and print one line,
``videorec COMMAND: error: <problem>; <fix>``, with no traceback. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from logsetup import configure_logging

REINGEST = "write it again with videorec ingest (videorec inspect shows what is wrong)"
"""The fix for a dataset version that is damaged or unsound."""


class CommandError(Exception):
    """A refusal the command line reports in one line; ``exit_status`` is the command's exit status."""

    exit_status = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UsageError(CommandError, ValueError):
    """Flags that name nothing known, or that do not fit together or with the dataset (exit 2)."""


class DatasetError(CommandError, ValueError):
    """A dataset that is missing, unsound, or disagrees with its manifest (exit 2)."""


class CheckpointError(CommandError, ValueError):
    """A checkpoint that is missing, damaged, or not a videorec checkpoint (exit 2)."""


class DataLossError(CommandError, RuntimeError):
    """More training samples were lost to damaged data than ``--max-lost-fraction`` allows (exit 4)."""

    exit_status = 4


class TrainingDiverged(CommandError, RuntimeError):
    """The loss became NaN or infinite: the run stops before the step would update the weights (exit 4)."""

    exit_status = 4


def run_command(prog: str, body: Callable[[], int | None], also: tuple[type[Exception], ...] = ()) -> int:
    """``body()``'s exit status, or the one of the :class:`CommandError` it raised (printed as one
    ``PROG: error: ...`` line on stderr), with logging set up first (:func:`configure_logging`).
    ``also``: other exception types reported the same way, with exit status 2."""
    configure_logging()
    try:
        return int(body() or 0)
    except CommandError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_status
    except also as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
