"""The runner is chosen on purpose and Beam is checked before it is patched (pipeline/beam_support.py,
pipeline/local_runner.py): a local run is the FnApiRunner whatever the network does, another runner
gets no patch, and a Beam the patches were not written for stops the ingest with one line, exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path

import apache_beam
import pytest
from apache_beam.runners.portability.fn_api_runner import execution, worker_handlers

from pipeline import beam_support
from pipeline.beam_support import RUNNER, WORKER, Internal, check_local_runner_support, internal_problem
from pipeline.local_runner import LOCAL_RUNNER, WORKER_SITE, choose_runner
from pipeline.main import run

REPO = Path(__file__).resolve().parents[1]


def tiny_log(folder: Path, users: int = 40) -> Path:
    path = folder / "pairs.csv"
    rows = [f"u{u},i{(u * 7 + k) % 25},{1_600_000_000 + 10 * k}" for u in range(users) for k in range(6)]
    path.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    return path


def test_the_installed_beam_fits_the_patches_on_both_sides():
    assert check_local_runner_support(RUNNER) == apache_beam.__version__
    assert check_local_runner_support(WORKER) in beam_support.SUPPORTED_BEAM_VERSIONS


def test_the_lock_names_a_supported_beam():
    pins = dict(line.split("==") for line in (REPO / "requirements.lock").read_text().split() if "==" in line)
    assert pins["apache-beam"] in beam_support.SUPPORTED_BEAM_VERSIONS
    assert pins["apache-beam"] == max(
        beam_support.SUPPORTED_BEAM_VERSIONS, key=lambda v: tuple(map(int, v.split(".")))
    )


def test_a_constant_no_longer_read_where_the_patch_expects_is_refused():
    moved = Internal(
        "apache_beam.runners.portability.fn_api_runner.worker_handlers:DATA_BUFFER_TIME_LIMIT_MS",
        RUNNER,
        read_by=("apache_beam.runners.worker.data_plane:_GrpcDataChannel.__init__",),
    )
    assert "no longer reads DATA_BUFFER_TIME_LIMIT_MS" in internal_problem(moved)


def test_an_internal_that_is_gone_or_unused_is_refused():
    gone = Internal("apache_beam.runners.portability.fn_api_runner.execution:NoSuchBuffer.append", RUNNER)
    assert internal_problem(gone) == "execution.NoSuchBuffer.append no longer exists"
    unused = Internal(
        "apache_beam.runners.portability.fn_api_runner.execution:ListBuffer", RUNNER, uses=("self._no_such",)
    )
    assert "no longer uses self._no_such" in internal_problem(unused)


CHANGED_INTERNAL = """
import sys
from apache_beam.runners.portability.fn_api_runner import execution

def __init__(self, pre_grouped_coder, post_grouped_coder, windowing, clock, spill_to):
    raise AssertionError("never called: the check must stop the run first")

{patch}
from pipeline.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "patch, named",
    [
        ("execution.GroupingBuffer.__init__ = __init__", "execution.GroupingBuffer.__init__ takes"),
        ("import apache_beam; apache_beam.__version__ = '2.79.0'", "Apache Beam 2.79.0 is installed"),
    ],
    ids=["changed-signature", "unsupported-version"],
)
def test_a_beam_the_patches_do_not_fit_stops_the_ingest_with_one_line_and_exit_2(tmp_path, patch, named):
    output = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CHANGED_INTERNAL.format(patch=patch)]
        + ["--interactions", str(tiny_log(tmp_path)), "--output", str(output), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    took = time.monotonic() - started
    errors = [line for line in done.stderr.splitlines() if line.startswith("videorec ingest:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and named in errors[0], done.stderr
    assert "supported" in errors[0] and "2.77.0, 2.78.0" in errors[0] and "requirements.lock" in errors[0]
    assert not output.exists() and not list(tmp_path.glob(".out*")), "nothing may start"
    print(f"stopped in {took:.1f} s: {errors[0]}")


def test_no_runner_flag_and_direct_runner_both_mean_the_fn_api_runner_with_worker_settings():
    args, choice = choose_runner([])
    assert args[0] == f"--runner={LOCAL_RUNNER}" and choice.local and choice.name == LOCAL_RUNNER
    assert (
        f"--direct_num_workers={os.cpu_count()}" in args and "--direct_running_mode=multi_processing" in args
    )
    args, choice = choose_runner(["--runner", "DirectRunner", "--direct_num_workers=3"])
    assert args.count(f"--runner={LOCAL_RUNNER}") == 1 and "DirectRunner" not in " ".join(args)
    assert choice.workers == 3 and "(--runner DirectRunner runs as FnApiRunner here)" in choice.describe()
    assert choice.stats() == {
        "runner": LOCAL_RUNNER,
        "beam_version": apache_beam.__version__,
        "local_patches": True,
        "workers": 3,
        "running_mode": "multi_processing",
    }


@pytest.mark.parametrize(
    "named", ["direct", "directrunner", "apache_beam.runners.direct.direct_runner.DirectRunner"]
)
def test_every_spelling_beam_accepts_for_the_direct_runner_runs_as_the_fn_api_runner(named):
    args, choice = choose_runner([f"--runner={named}"])
    assert choice.local and args[0] == f"--runner={LOCAL_RUNNER}"
    assert not [a for a in args[1:] if a.startswith("--runner")]


@pytest.mark.parametrize(
    "runner", ["PrismRunner", "FlinkRunner", "SparkRunner", "PortableRunner", "DataflowRunner"]
)
def test_other_runners_are_passed_through_unpatched(runner):
    args, choice = choose_runner(["--runner", runner, "--project=p"])
    assert args == ["--runner", runner, "--project=p"]
    assert not choice.local and choice.stats()["local_patches"] is False
    assert choice.describe() == f"runner {runner} (no local patches), Apache Beam {apache_beam.__version__}"


def test_a_local_ingest_picks_the_same_runner_with_or_without_dns_and_never_downloads(
    tmp_path, monkeypatch, capsys
):
    log = tiny_log(tmp_path)
    reached: list[str] = []

    def no_dns(host, *args, **kwargs):
        reached.append(f"getaddrinfo {host}")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def no_download(url, *args, **kwargs):
        reached.append(f"urlopen {getattr(url, 'full_url', url)}")
        raise OSError("no network here")

    lines = []
    for dns in (True, False):
        with monkeypatch.context() as patched:
            patched.setattr(urllib.request, "urlopen", no_download)
            if not dns:
                patched.setattr(socket, "getaddrinfo", no_dns)
            result = run(["--interactions", str(log), "--output", str(tmp_path / f"out-{dns}")])
        stderr = capsys.readouterr().err
        lines.append(stderr.splitlines()[0])
        assert result.stats["runner"] == LOCAL_RUNNER and result.stats["local_patches"] is True
        on_disk = json.loads((tmp_path / f"out-{dns}" / "run_stats.json").read_text())
        assert on_disk["runner"] == LOCAL_RUNNER and on_disk["beam_version"] == apache_beam.__version__
    assert (
        lines[0]
        == lines[1]
        == f"ingest: runner {LOCAL_RUNNER} (local, {os.cpu_count()} worker process(es), "
        + (f"multi_processing), Apache Beam {apache_beam.__version__}")
    )
    assert not [r for r in reached if "localhost" not in r and "127.0.0.1" not in r], reached


def test_prism_gets_no_patch_and_fails_with_beams_own_error_when_it_cannot_download(tmp_path, monkeypatch):
    """``--runner PrismRunner`` is passed to Beam as it is: nothing of Beam is patched while it runs and
    workers get no worker site. Here Prism cannot be downloaded, so the run fails with Beam's error and
    publishes nothing."""
    from apache_beam.runners.portability import prism_runner

    seen = {}
    real = prism_runner.PrismRunner.run_pipeline

    def run_pipeline(self, pipeline, options):
        seen["buffers"] = (execution.ListBuffer.__name__, execution.GroupingBuffer.__name__)
        seen["time_limit"] = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
        seen["worker_site"] = WORKER_SITE in os.environ.get("PYTHONPATH", "")
        return real(self, pipeline, options)

    def no_download(url, *args, **kwargs):
        raise OSError(f"no network here ({getattr(url, 'full_url', url)})")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", run_pipeline)
    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached Prism binary
    output = tmp_path / "out"
    with pytest.raises(Exception) as raised:
        run(["--interactions", str(tiny_log(tmp_path)), "--output", str(output), "--runner", "PrismRunner"])
    assert seen == {"buffers": ("ListBuffer", "GroupingBuffer"), "time_limit": 1000, "worker_site": False}
    assert "prism" in "".join(traceback.format_exception(raised.value)).lower()
    assert not output.exists() and not list(tmp_path.glob(".out*"))
