"""CSV records that span lines (RFC 4180: a quoted field may hold commas, doubled quotes and newlines).

A CSV log is read in byte splits, in parallel, so whether a line starts a record or continues a
quoted field must be known without reading the file from its start. The quote state is a small
machine, the one Python's ``csv`` module follows (default dialect, not strict):

- ``START``: at the start of a field; a ``"`` here opens a quoted field, ``,`` and line ends keep ``START``;
- ``PLAIN``: inside an unquoted field, where a ``"`` is an ordinary character;
- ``QUOTED``: inside a quoted field, where everything, newlines included, belongs to the field;
- ``CLOSING``: a ``"`` inside a quoted field: a second ``"`` is an escaped quote (back to ``QUOTED``), ``,`` or a
  line end closes the field, anything else continues it unquoted (``PLAIN``).

A newline read in ``START``, ``PLAIN`` or ``CLOSING`` ends a record; one read in ``QUOTED`` does not. After each line
the state is ``START`` (the next line starts a record) or ``QUOTED`` (it continues one). :func:`transitions`
gives a byte range's exit state for every entry state; composing them over the splits before a
split (:func:`entry_states`) gives its entry state, so each split knows where its first record
starts and reads its last record to the end, past its byte range if it must. Only quotes are
visited (``bytes.find``), so a log without quotes costs one search per block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

START, PLAIN, QUOTED, CLOSING = range(4)
STATES = (START, PLAIN, QUOTED, CLOSING)

MAX_RECORD_LINES = 10_000
"""Most lines one record may span; a quoted field left open longer is a fault of the file."""
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""Most bytes one record of several lines may hold."""

_QUOTE, _COMMA, _CR, _LF = 0x22, 0x2C, 0x0D, 0x0A
_FIELD_ENDS = (_COMMA, _CR, _LF)


def _opening_quote(data: bytes, pos: int, state: int) -> int:
    """Index of the first ``"`` at or after ``pos`` that opens a quoted field (in state ``START``/``PLAIN``)."""
    q = data.find(b'"', pos)
    while q >= 0:
        if (state == START) if q == pos else data[q - 1] in _FIELD_ENDS:
            return q
        q = data.find(b'"', q + 1)
    return -1


def scan(data: bytes, state: int, stop_at_record_end: bool = False) -> tuple[int, int]:
    """``(state after data, index)``: ``index`` is just past the first newline that ends a record
    when ``stop_at_record_end`` (the state is then ``START``), else -1."""
    pos, n = 0, len(data)
    while pos < n:
        if state == QUOTED:
            q = data.find(b'"', pos)
            if q < 0:
                return QUOTED, -1
            state, pos = CLOSING, q + 1
        elif state == CLOSING:
            c = data[pos]
            state = QUOTED if c == _QUOTE else START if c in _FIELD_ENDS else PLAIN
            pos += 1
            if c == _LF and stop_at_record_end:
                return START, pos
        else:
            q = _opening_quote(data, pos, state)
            if stop_at_record_end:
                newline = data.find(b"\n", pos, n if q < 0 else q)
                if newline >= 0:
                    return START, newline + 1
            if q < 0:
                return (START if data[n - 1] in _FIELD_ENDS else PLAIN), -1
            state, pos = QUOTED, q + 1
    return state, -1


# Outside a quoted field, everything that leaves it outside, in one match: runs without quotes,
# whole quoted fields (opened at a field start), quotes inside unquoted fields. It stops at a quoted
# field that does not close; ``closed`` is the last whole quoted field matched.
_OUTSIDE = re.compile(rb'(?:[^"]+|(?P<closed>(?<![^,\r\n])"(?>(?:[^"]+|"")*)")|(?<=[^,\r\n])")*')
_REST_OF_FIELD = re.compile(rb'(?>(?:[^"]+|"")*)(")?')


def state_after(data: bytes, state: int, pos: int = 0, n: int | None = None) -> int:
    """The state after ``data[pos:n]`` entered in ``state`` (what :func:`scan` says, in a few regex
    matches)."""
    n = len(data) if n is None else n
    while True:
        if state == QUOTED:
            rest = _REST_OF_FIELD.match(data, pos, n)
            if rest.group(1) is None:
                return QUOTED
            state, pos = CLOSING, rest.end()
        if state == CLOSING:
            if pos >= n:
                return CLOSING
            c = data[pos]
            pos += 1
            if c == _QUOTE:
                state = QUOTED
                continue
            state = START if c in _FIELD_ENDS else PLAIN
        if pos >= n:
            return state
        begin = pos + 1 if state == PLAIN and data[pos] == _QUOTE and pos == 0 else pos
        outside = _OUTSIDE.match(data, begin, n)
        end = outside.end()
        if end < n:  # a quoted field opens at ``end`` and does not close before the end of data
            state, pos = QUOTED, end + 1
            continue
        if outside.end("closed") == n:
            return CLOSING
        return START if data[n - 1] in _FIELD_ENDS else PLAIN


_SPECIAL = re.compile(rb'[",\r\n]')


def transitions(data: bytes, before: tuple[int, ...] = STATES) -> tuple[int, ...]:
    """The exit state after ``data`` for each entry state; ``before`` chains blocks: the exit states
    of the bytes before ``data`` (``transitions(b, transitions(a)) == transitions(a + b)``).

    Runs entered in ``START`` and ``PLAIN`` meet at the first field end unless a quote comes first,
    one entered in ``CLOSING`` meets one of them after a byte, and one entered in ``QUOTED`` meets
    the ``START`` run at the first record end where that run is outside quotes too (in a log of
    one-line records, the end of the first line): one scan of the whole range usually does."""
    if not data:
        return tuple(before)
    exits = {START: state_after(data, START)}
    exits[QUOTED] = _quoted_exit(data, exits[START])
    special = _SPECIAL.search(data)
    if special is not None and special.group() == b'"':
        exits[PLAIN] = state_after(data, PLAIN)
    else:
        exits[PLAIN] = exits[START]
    first = data[0]
    if first == _QUOTE:
        exits[CLOSING] = state_after(data, QUOTED, 1)
    else:
        exits[CLOSING] = exits[START] if first in _FIELD_ENDS else exits[PLAIN]
    return tuple(exits[state] for state in before)


def _quoted_exit(data: bytes, start_exit: int) -> int:
    """``state_after(data, QUOTED)``: ``start_exit`` (the ``START`` run's) where the two runs meet."""
    _, record_end = scan(data, QUOTED, stop_at_record_end=True)
    if record_end < 0:
        return state_after(data, QUOTED)
    if data[record_end - 1] == _LF and state_after(data, START, 0, record_end) == START:
        return start_exit  # both runs are at a record start here: they go on alike
    return state_after(data, START, record_end)


def entry_states(ordered: list[tuple[int, ...]], first: int = START) -> list[int]:
    """The state at the start of each of ``ordered`` consecutive byte ranges (their
    :func:`transitions`), the first starting in ``first``."""
    states, state = [], first
    for exits in ordered:
        states.append(state)
        state = exits[state]
    return states


def records(
    lines: Iterable[bytes], first_line: int = 1, limit: int | None = None
) -> Iterator[tuple[int, bytes, str]]:
    """``(line number, record bytes, problem)`` for each record of ``lines`` (whole lines of a CSV,
    the first starting a record); with ``limit``, only the records that start within the first
    ``limit`` bytes (the last one read to its end). ``problem`` is ``""``, or says why the record is
    a single line of a quoted field left open: one that spans more than :data:`MAX_RECORD_LINES`
    lines or :data:`MAX_RECORD_BYTES` bytes, or is not closed at the end. Each line of such a field
    is yielded on its own, so every line is accounted for and memory stays bounded.
    """
    pending: list[tuple[int, bytes]] = []  # the lines of the record being read
    size = position = 0
    end = (1 << 62) if limit is None else limit
    problem = ""  # set while the lines of an over-long quoted field are yielded as faults
    outside = _OUTSIDE.match
    numbered = enumerate(lines, start=first_line)
    for number, line in numbered:
        if position >= end:
            return
        position += len(line)
        if b'"' not in line or outside(line).end() == len(line):
            yield number, line, ""  # most records: one line, no quoted field left open
            continue
        pending, size = [(number, line)], len(line)
        for number, line in numbered:  # the rest of a record whose quoted field holds newlines
            position += len(line)
            inside = state_after(line, QUOTED) == QUOTED
            if problem:
                yield number, line, problem
            else:
                pending.append((number, line))
                size += len(line)
                if not inside:
                    yield pending[0][0], b"".join(part for _, part in pending), ""
                elif len(pending) > MAX_RECORD_LINES or size > MAX_RECORD_BYTES:
                    problem = (
                        f"a quoted field opened on line {pending[0][0]} is still open after "
                        f"{len(pending)} lines ({size} bytes); each of its lines is dropped"
                    )
                    yield from ((n, part, problem) for n, part in pending)
                    pending = []
            if not inside:
                pending, problem = [], ""
                break
        if pending:  # the input ended inside the quoted field
            problem = (
                f"a quoted field opened on line {pending[0][0]} is not closed before the end of the input"
            )
            yield from ((n, part, problem) for n, part in pending)
            return
