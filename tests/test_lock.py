"""requirements.lock and setup.py agree: every locked version is one setup.py's ranges allow, every
requirement of setup.py is locked, and the lock pins exact versions only (scripts/setup_venv.sh
installs it; scripts/lock_diff.py compares an environment with it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, separator, version = line.partition("==")
            assert separator and version and not any(c in version for c in "<>=!~*,;"), line
            pins[canonicalize_name(name)] = version
    return pins


def setup_requirements() -> list[Requirement]:
    """The install and extra requirements, read from setup.py's source (it calls setup() on import)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in (
            "INGEST_REQUIRES",
            "EXTRAS",
        ):
            found += [
                Requirement(c.value)
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and "." in c.value
            ]
    return found


def test_every_requirement_of_setup_py_is_locked_at_a_version_its_range_allows():
    pins, requirements = locked(), setup_requirements()
    assert len(requirements) > 15
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock has {name}=={pins[name]}, setup.py allows {requirement.specifier}"
        )


def test_lock_diff_names_what_differs(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\npytest==0.0.1\nno-such-package-anywhere==1.0\n")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "lock_diff.py"), str(lock)], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "not installed: no-such-package-anywhere==1.0" in done.stdout
    assert "locked 0.0.1" in done.stdout and "installed but not locked: " in done.stdout
