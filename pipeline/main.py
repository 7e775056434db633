"""``videorec ingest``: run the ingest job, print one line on failure, and exit with its status.

``videorec ingest ...`` and ``python -m pipeline.main ...`` both call :func:`main`, which turns what
the job raised into one line on stderr and an exit status (2 bad flags or input, 3 the dataset root
refused the run, ``GATE_EXIT`` a gate refused the result, 130/143 interrupted, 1 a full disk). The
job itself is :mod:`pipeline.ingest_job`.
"""

from __future__ import annotations

import errno
import sys

from pipeline import versions
from pipeline.gates import GATE_EXIT, GateTripped
from pipeline.ingest_job import run
from pipeline.interrupts import Interrupted

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` or what caused it is a full disk (a worker's error arrives as its traceback text)."""
    seen: BaseException | None = error
    for _ in range(20):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return True
        if any(f"[Errno {code}]" in str(seen) for code in NO_SPACE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except Exception as err:
        if not disk_full(err):
            raise
        print(
            "videorec ingest: error: no space left on a disk the run writes to (the output, --work-dir, or "
            "TMPDIR for the local runner's stage data); nothing was published: free space or point them "
            "elsewhere",
            file=sys.stderr,
        )
        return 1


def _main(argv: list[str]) -> int:
    try:
        run(argv)
    except (FileNotFoundError, ValueError) as err:
        print(f"videorec ingest: error: {err}", file=sys.stderr)
        return 2
    except versions.VersionError as err:
        print(f"videorec ingest: error: {err}", file=sys.stderr)
        return 3
    except GateTripped as err:
        print(f"videorec ingest: error: {err}", file=sys.stderr)
        return GATE_EXIT
    except Interrupted as err:
        print(f"videorec ingest: {err}", file=sys.stderr)
        return err.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
