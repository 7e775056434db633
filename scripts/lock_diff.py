"""Compare an environment's packages with requirements.lock; print what differs, exit 1 if anything does.

    python scripts/lock_diff.py requirements.lock            # the running interpreter's packages
    python scripts/lock_diff.py requirements.lock --extras   # only print the names installed but not locked

Names are compared as PEP 503 normalises them; the editable install of this project is ignored. The
installers (pip, setuptools) are pinned on the lock's ``# bootstrap:`` line, since ``pip freeze`` leaves
them out: the rest of the lock is exactly what ``pip freeze --exclude-editable`` prints in ``.venv``.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

PROJECT = "videorec-pipeline"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str) -> dict[str, str]:
    """The lock's pins, with the installers of its ``# bootstrap:`` line (pip, setuptools)."""
    pins = {}
    with open(path, encoding="utf-8") as lock:
        for line in lock:
            if line.startswith("# bootstrap:"):
                for pin in line.split(":", 1)[1].split("(", 1)[0].split():
                    name, _, version = pin.partition("==")
                    pins[normalise(name)] = version
                continue
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                pins[normalise(name)] = version.strip()
    return pins


def installed() -> dict[str, str]:
    found = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    found.pop(PROJECT, None)
    return found


def main(argv: list[str]) -> int:
    lock, have = read_lock(argv[0]), installed()
    extras = sorted(set(have) - set(lock))
    if "--extras" in argv:
        print("\n".join(extras))
        return 0
    missing = sorted(set(lock) - set(have))
    changed = sorted(n for n in set(lock) & set(have) if lock[n] != have[n])
    lines = [f"not installed: {n}=={lock[n]}" for n in missing]
    lines += [f"installed {n}=={have[n]}, locked {lock[n]}" for n in changed]
    lines += [f"installed but not locked: {n}=={have[n]}" for n in extras]
    if lines:
        print("\n".join(lines))
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
