"""Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE`` in deploy/Dockerfile).

Dataflow's template launcher runs ``python flex_main.py --name=value ...`` with the template's
parameters (snake_case, as declared in deploy/metadata.json) followed by Dataflow's own pipeline
options (``--runner``, ``--project``, ``--region``, ``--temp_location``, ``--sdk_container_image``...).

This file turns the template parameters back into ``videorec ingest`` flags and submits the same job
as ``videorec ingest`` with ``pipeline.ingest_job.launch``, without waiting: a Flex Template launcher must
exit once the job is submitted, and Dataflow runs the rest. With ``dataset_root`` the launcher takes
the root's lease, and the job's own last step (after the manifest) publishes ``LATEST``, releases
the lease and prunes to ``keep`` versions.
"""

from __future__ import annotations

import argparse
import re
import sys

_SPLIT_LIST = re.compile(r"[\s,]+")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def ingest_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's long flags keyed by their Flex Template parameter name (``--max-seq-len`` -> ``max_seq_len``)."""
    flags = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                flags[option[2:].replace("-", "_")] = action
    return flags


def to_cli_argv(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Template-launcher arguments -> ``videorec ingest`` arguments.

    ``--max_seq_len=10`` becomes ``--max-seq-len=10``; list values (``--frame_size=224 224`` or
    ``224,224``) are split into separate arguments; a boolean flag given ``true`` is passed bare and
    one given ``false`` is dropped. Every other argument (Beam's pipeline options) is left as it is.
    """
    flags = ingest_flags(parser)
    out = []
    for arg in argv:
        name, has_value, value = arg[2:].partition("=") if arg.startswith("--") else ("", False, "")
        action = flags.get(name)
        if action is None or not has_value:
            out.append(arg)
            continue
        flag = next(o for o in action.option_strings if o.startswith("--"))
        if action.nargs == 0:  # store_true style switch
            if value.strip().lower() not in _TRUE | _FALSE:
                raise ValueError(f"--{name} takes true or false, got {value!r}")
            if value.strip().lower() in _TRUE:
                out.append(flag)
        elif action.nargs in ("+", "*") or isinstance(action.nargs, int):
            out += [flag, *[v for v in _SPLIT_LIST.split(value.strip()) if v]]
        else:
            out.append(f"{flag}={value}")
    return out


def with_dataflow_runner(argv: list[str]) -> list[str]:
    """The launcher normally passes ``--runner``; default to Dataflow when it does not."""
    if any(a == "--runner" or a.startswith("--runner=") for a in argv):
        return argv
    return [*argv, "--runner=DataflowRunner"]


def main(argv: list[str]) -> int:
    from pipeline.ingest_job import launch
    from pipeline.options import parser

    result = launch(with_dataflow_runner(to_cli_argv(argv, parser())))
    print(f"videorec flex launcher: submitted, state {result.state}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
