"""The ingest job driver: build the graph for a parsed config, run it, summarise what it wrote.

Tests call :func:`run` with a list of arguments, which waits for the job; :func:`launch` submits the
same job and returns at once (the Flex Template launcher, deploy/flex_main.py). The command that
prints one line and an exit status is :mod:`pipeline.main`; the graph is :mod:`pipeline.graph`;
where the job writes is :mod:`pipeline.staged_output` (``--output``) and :mod:`pipeline.root_run`
(``--dataset-root``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from dataformat.format import RUN_STATS_FILE
from pipeline import beam_support, versions
from pipeline.gates import gate_problems
from pipeline.graph import build_pipeline
from pipeline.interrupts import SignalWatch
from pipeline.local_runner import RunnerChoice, choose_runner, local_run
from pipeline.options import IngestConfig, parse
from pipeline.root_run import launch_on_root, run_on_root
from pipeline.staged_output import launch_on_output, run_on_output
from pipeline.summary import format_summary, video_stats
from transforms import storage
from transforms.interactions import resolve_inputs
from transforms.keyed_csv import rejected_rows
from transforms.manifest import read_version_manifest
from transforms.reuse import ReuseFrom

PROGRESS_EVERY = 50


@dataclass(frozen=True)
class IngestResult:
    """What a finished run wrote: the dataset folder, its manifest, the run's timing and Beam counters."""

    output: str
    manifest: dict
    stats: dict
    counters: dict


def job_counters(outcome) -> dict[str, int]:
    """The job's ``videorec`` Beam counters by name (committed values, summed over steps)."""
    totals: dict[str, int] = {}
    for counter in outcome.metrics().query(MetricsFilter().with_namespace("videorec"))["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
    return dict(sorted(totals.items()))


def prepare(argv: list[str]):
    """``(config, Beam arguments, runner, quiet)``; prints the runner line first.

    For the local runner the installed Beam is checked here, before anything reads an input
    (``beam_support.UnsupportedBeam``, exit 2).
    """
    config, beam_args, quiet = parse(argv)
    beam_args, runner = choose_runner(beam_args)
    if runner.local:
        beam_support.check_local_runner_support(beam_support.RUNNER)
    if not quiet:
        print(f"ingest: {runner.describe()}", file=sys.stderr, flush=True)
    return config, beam_args, runner, quiet


def run(argv: list[str]) -> IngestResult:
    """Run the ingest job with command-line arguments, wait for it, and return what it wrote.

    With ``--dataset-root`` the run takes the root's lease, writes ``ROOT/versions/<id>/`` (reusing
    the frames of unchanged videos from the ``LATEST`` version), then publishes it as ``LATEST``,
    releases the root and prunes to ``--keep`` versions (:mod:`pipeline.root_run`). A failed job
    releases the root and leaves ``LATEST`` as it was. Otherwise it writes ``--output``.
    """
    config, beam_args, runner, quiet = prepare(argv)
    if config.dataset_root is None:
        return run_on_output(config, lambda staged: run_job(staged, beam_args, runner, quiet), quiet)
    return run_on_root(
        config, lambda versioned, reuse: run_job(versioned, beam_args, runner, quiet, reuse), quiet
    )


def launch(argv: list[str]):
    """Submit the ingest job and return its ``PipelineResult`` without waiting for it.

    For launchers that must exit once the job is submitted (a Dataflow Flex Template). With
    ``--dataset-root`` the lease is taken here and the job's last step publishes ``LATEST``,
    releases the root and prunes (``pipeline.last_steps.PublishAsLatest``); a job that fails on the
    service keeps the lease until ``--lease-ttl`` runs out (docs/INCREMENTAL.md, Operations). No
    run_stats.json is written: the launcher does not see the job end. A local runner runs the
    whole job inside this call.
    """
    config, beam_args, runner, quiet = prepare(argv)
    if config.dataset_root is None:
        return launch_on_output(config, lambda checked: start_job(checked, beam_args, runner, quiet))
    return launch_on_root(
        config,
        lambda versioned, reuse, lease: start_job(
            versioned, beam_args, runner, quiet, reuse, publish_with=lease
        ),
    )


def start_job(
    config: IngestConfig,
    beam_args: list[str],
    runner: RunnerChoice,
    quiet: bool,
    reuse: ReuseFrom | None = None,
    publish_with: versions.RunLease | None = None,
):
    """Build the pipeline for ``config`` and hand it to the runner; returns its ``PipelineResult``.

    The local runner's patches are in place only inside this call (``local_runner.local_run``).
    """
    options = PipelineOptions(beam_args)
    FileSystems.set_options(options)
    sources = resolve_inputs(config.interactions, config.format)
    if not quiet:
        kinds = sorted({fmt for _, _, fmt in sources})
        mode = "with videos" if config.has_videos else "ID-only"
        print(
            f"ingest: {len(sources)} interaction file(s) ({', '.join(kinds)}), {mode} -> {config.output}",
            file=sys.stderr,
        )
        if reuse is not None and (notice := reuse.base_notice()):
            print(notice, file=sys.stderr)
    with inside_the_job(), local_run(runner, stop_processes=SignalWatch().stop_job_processes):
        pipeline = beam.Pipeline(options=options)
        build_pipeline(
            pipeline,
            config,
            sources,
            progress_every=0 if quiet else PROGRESS_EVERY,
            reuse=reuse,
            publish_with=publish_with,
        )
        return pipeline.run()


class JobFailed(RuntimeError):
    """A ``ValueError`` raised while the job ran: a fault of the job or its data, not bad flags (exit 1)."""


@contextlib.contextmanager
def inside_the_job():
    """``ValueError`` means bad input (exit 2) only before the job; inside it, it becomes :class:`JobFailed`."""
    try:
        yield
    except ValueError as error:
        raise JobFailed(f"the ingest job failed: {type(error).__name__}: {error}") from error


def run_job(
    config: IngestConfig,
    beam_args: list[str],
    runner: RunnerChoice,
    quiet: bool,
    reuse: ReuseFrom | None = None,
) -> IngestResult:
    """Run the pipeline for ``config`` to the end; write run_stats.json and print the summary.

    With ``reuse``, videos unchanged since that version reuse its frames (see ``EncodeItems``).
    """
    started = time.monotonic()
    outcome = start_job(config, beam_args, runner, quiet, reuse)
    with inside_the_job():
        outcome.wait_until_finish()
    wall = time.monotonic() - started
    manifest = read_version_manifest(config.output)
    counters = job_counters(outcome)
    stats = {
        "wall_s": round(wall, 3),
        **video_stats(counters, wall),
        "side_rows_rejected": rejected_rows(counters),
        **runner.stats(),
        "gates": gate_problems(manifest["counts"], config.max_dropped_fraction),
    }
    stats_json = (json.dumps(stats, indent=2) + "\n").encode()
    storage.write_bytes(storage.join(config.output, RUN_STATS_FILE), stats_json)
    if not quiet:
        print(format_summary(manifest, stats))
    return IngestResult(config.output, manifest, stats, counters)
