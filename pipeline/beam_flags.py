"""Checking the flags an ingest command leaves to Apache Beam: one line for a flag Beam does not know.

A misspelled flag would otherwise reach Beam, which only warns and runs with its defaults.
"""

from __future__ import annotations

import argparse
import difflib

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser


class _BeamFlags(_BeamArgumentParser):
    """Beam's own option parser, raising ``ValueError`` instead of exiting."""

    def error(self, message: str):
        if message.startswith("ambiguous option: "):
            return
        raise ValueError(message)


def beam_flag_problem(beam_args: list[str], ours: argparse.ArgumentParser) -> str | None:
    """What is wrong with the flags left over after ours, as one line; None when Beam knows them all.

    A misspelled flag would otherwise reach Beam, which only warns and runs with defaults.
    """
    beam = _BeamFlags(allow_abbrev=False)
    seen = set()
    for cls in PipelineOptions.__subclasses__():
        if str(cls) not in seen:
            seen.add(str(cls))
            cls._add_argparse_args(beam)
    try:
        _, unknown = beam.parse_known_args(beam_args)
    except ValueError as err:
        return f"Beam option: {err}"
    if not unknown:
        return None
    first = unknown[0]
    if not first.startswith("-"):
        return f"unexpected argument {first!r} (every input is given with a flag, e.g. --interactions)"
    name = first.split("=", 1)[0]
    known = [o for parser_ in (ours, beam) for a in parser_._actions for o in a.option_strings]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    hint = (
        f"; did you mean {close[0]}?" if close else "; it is neither an ingest flag nor an Apache Beam option"
    )
    return f"unknown flag {name}{hint}"
