"""Sample keys for WebDataset shards.

WebDataset splits a member name at its first dot into ``__key__`` and extension, and a
key must be a safe path component. IDs from user logs can hold anything, so they are
mapped reversibly to ``[A-Za-z0-9_-]`` with every other byte (and ``_`` itself)
escaped as ``_xx`` hex.
"""

from __future__ import annotations

import re

_SAFE = re.compile(rb"[A-Za-z0-9-]")
_ESCAPE = re.compile(r"_([0-9a-f]{2})")


def sanitize_key(identifier: str) -> str:
    """Return a tar- and WebDataset-safe key for ``identifier`` (reversible, injective).

    No ``/``, no ``.``, no leading ``-``; the empty string maps to ``_``.
    """
    raw = str(identifier).encode("utf-8")
    out = []
    for i, byte in enumerate(raw):
        char = bytes([byte])
        if _SAFE.fullmatch(char) and not (i == 0 and char == b"-"):
            out.append(char.decode("ascii"))
        else:
            out.append(f"_{byte:02x}")
    return "".join(out) or "_"


def unsanitize_key(key: str) -> str:
    """Invert :func:`sanitize_key`."""
    if key == "_":
        return ""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), key).encode("latin-1").decode("utf-8")
