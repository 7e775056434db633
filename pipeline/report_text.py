"""How the ingest commands spell an error or counts per reason inside their one-line messages.

Used by the gates (:mod:`pipeline.gates`), the run summary (:mod:`pipeline.summary`), ``videorec
inspect`` (:mod:`pipeline.inspect`) and the checks before a run (:mod:`pipeline.preflight`).
"""

from __future__ import annotations

from collections.abc import Mapping


def one_line(error: BaseException, limit: int) -> str:
    """``error``'s message on one line (whitespace runs become one space; its type's name when the
    message is empty), cut to ``limit`` characters with ``...``."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def by_reason(counts: Mapping[str, int], largest_first: bool = False) -> str:
    """``"reason n, reason n"``: by reason, or with ``largest_first`` the largest count first (ties
    by reason); ``"none"`` when ``counts`` is empty."""
    key = (lambda kv: (-kv[1], kv[0])) if largest_first else (lambda kv: kv[0])
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=key)) or "none"
