"""Which Apache Beam releases the local runner's patches support, and the check that proves it.

Local runs (the FnApiRunner, :mod:`pipeline.local_runner`) change a few private parts of Beam:
a module constant here, a class or a method there (:mod:`pipeline.runner_buffers`,
``pipeline.local_runner.bound_worker_memory``). Private parts change without notice between
releases (Beam 2.78 gave ``GroupingBuffer`` a ``clock`` argument), and a patch written for one shape
of them can then fail at run time, or worse, do nothing while the job runs on.

So before a local job starts, :func:`check_local_runner_support` checks, on the installed Beam:

- the version is one of :data:`SUPPORTED_BEAM_VERSIONS` (the versions the whole test suite ran on);
- every patched attribute or class exists;
- every patched callable takes the parameters its patch was written for (``inspect.signature``);
- every patched module constant is still read where the patch expects it (the reading function's
  source names it), so assigning it still changes something;
- every private attribute a patch touches is still used by the class it belongs to.

Any failure is one :class:`UnsupportedBeam` error naming the installed version, the supported ones
and the command that installs the locked set; ``videorec ingest`` prints it and exits 2 before
anything runs. A local SDK worker runs the worker-side checks before it patches itself
(``pipeline/worker_site``) and exits if they fail, which fails the job.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

# The Beam releases the whole test suite passed on with these patches (docs/INGEST.md, "Upgrading").
SUPPORTED_BEAM_VERSIONS = ("2.77.0", "2.78.0")
INSTALL_HINT = (
    "install the locked set with: bash scripts/setup_venv.sh (or pip install -c requirements.lock -e .)"
)

RUNNER = "runner"
WORKER = "worker"
BOTH = "both"


class UnsupportedBeam(ValueError):
    """The installed Beam is not one the local runner's patches were written and tested for."""


@dataclass(frozen=True)
class Internal:
    """One private part of Beam that a patch of this project changes or relies on.

    ``path`` is ``module:qualname``. ``parameters`` lists the accepted parameter-name tuples of a
    callable (one per supported shape; empty for a constant or a class used as it is). ``read_by``
    names the ``module:qualname`` functions whose source must mention the constant's name for an
    assignment to it to have an effect; ``uses`` names attributes the object's own source must use.
    """

    path: str
    side: str
    parameters: tuple[tuple[str, ...], ...] = ()
    read_by: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()


_EXECUTION = "apache_beam.runners.portability.fn_api_runner.execution"
_FN_RUNNER = "apache_beam.runners.portability.fn_api_runner.fn_runner"
_HANDLERS = "apache_beam.runners.portability.fn_api_runner.worker_handlers"
_JOB_SERVICE = "apache_beam.runners.portability.local_job_service"
_DATA_PLANE = "apache_beam.runners.worker.data_plane"
_SDK_WORKER = "apache_beam.runners.worker.sdk_worker"

INTERNALS = (
    # local_runner.avoid_data_plane_race
    Internal(f"{_HANDLERS}:DATA_BUFFER_TIME_LIMIT_MS", RUNNER, read_by=(f"{_HANDLERS}:GrpcServer.__init__",)),
    # queues and message size of the data plane: runner_buffers.install in the runner,
    # local_runner.bound_worker_memory in each worker
    Internal(
        f"{_DATA_PLANE}:_DEFAULT_SEND_QUEUE_MAX_BYTES",
        BOTH,
        read_by=(f"{_DATA_PLANE}:_GrpcDataChannel.__init__",),
    ),
    Internal(
        f"{_DATA_PLANE}:_DEFAULT_SIZE_FLUSH_THRESHOLD",
        BOTH,
        read_by=(f"{_DATA_PLANE}:_GrpcDataChannel._write_outputs",),
    ),
    Internal(
        f"{_DATA_PLANE}:_GrpcDataChannel.output_stream",
        RUNNER,
        ((("self", "instruction_id", "transform_id")),),
    ),
    Internal(f"{_DATA_PLANE}:_GrpcDataChannel._receiving_queue", RUNNER, ((("self", "instruction_id")),)),
    # runner_buffers.drain_after_failure empties these queues after a failure
    Internal(
        f"{_DATA_PLANE}:_GrpcDataChannel",
        RUNNER,
        uses=(
            "self._pending_send = ByteLimitedQueue(",
            "self._to_send = ByteLimitedQueue(",
            "self._received = ",
        ),
    ),
    Internal(f"{_DATA_PLANE}:ByteLimitedQueue.get", RUNNER, (("self", "block", "timeout"),)),
    # runner_buffers: the spilling buffers replace these classes, created by get_buffer
    Internal(
        f"{_EXECUTION}:BundleContextManager.get_buffer",
        RUNNER,
        (("self", "buffer_id", "transform_id"),),
        uses=("ListBuffer(", "GroupingBuffer("),
    ),
    Internal(f"{_EXECUTION}:ListBuffer.__init__", RUNNER, (("self", "coder_impl"),)),
    Internal(
        f"{_EXECUTION}:ListBuffer",
        RUNNER,
        uses=("self._inputs", "self.cleared", "self._coder_impl", "def partition", "def copy", "def clear"),
    ),
    Internal(f"{_EXECUTION}:ListBuffer.append", RUNNER, (("self", "element"),)),
    Internal(f"{_EXECUTION}:ListBuffer.partition", RUNNER, (("self", "n"),)),
    Internal(
        f"{_EXECUTION}:GroupingBuffer.__init__",
        RUNNER,
        (
            ("self", "pre_grouped_coder", "post_grouped_coder", "windowing"),  # 2.77
            ("self", "pre_grouped_coder", "post_grouped_coder", "windowing", "clock"),  # 2.78
        ),
    ),
    Internal(
        f"{_EXECUTION}:GroupingBuffer",
        RUNNER,
        uses=(
            "self._grouped_output",
            "self._pre_grouped_coder",
            "self._post_grouped_coder",
            "self._key_coder",
        ),
    ),
    Internal(f"{_EXECUTION}:GroupingBuffer.append", RUNNER, (("self", "elements_data"),)),
    Internal(f"{_EXECUTION}:GroupingBuffer.extend", RUNNER, (("self", "input_buffer"),)),
    Internal(f"{_EXECUTION}:GroupingBuffer.partition", RUNNER, (("self", "n"),)),
    Internal(f"{_FN_RUNNER}:ListBuffer", RUNNER),
    # runner_buffers.install: chunked inputs sent from their own threads
    Internal(
        f"{_FN_RUNNER}:BundleManager._send_input_to_worker",
        RUNNER,
        (("self", "process_bundle_id", "read_transform_id", "byte_streams"),),
    ),
    Internal(
        f"{_FN_RUNNER}:BundleManager.process_bundle",
        RUNNER,
        (("self", "inputs", "expected_outputs", "fired_timers", "expected_output_timers", "dry_run"),),
        uses=("self._send_input_to_worker(", "self._worker_handler"),
    ),
    # local_runner.watch_workers: a worker process that exits fails the job
    Internal(
        f"{_JOB_SERVICE}:SubprocessSdkWorker.run",
        RUNNER,
        (("self",),),
        uses=("p.returncode", "RuntimeError("),
    ),
    # local_runner.bound_worker_memory, in each local SDK worker
    Internal(
        f"{_DATA_PLANE}:SizeBasedBufferingClosableOutputStream.__init__",
        WORKER,
        (
            (
                "self",
                "close_callback",
                "flush_callback",
                "size_flush_threshold",
                "large_buffer_warn_threshold_bytes",
            ),
        ),
    ),
    Internal(
        f"{_SDK_WORKER}:BundleProcessorCache.release",
        WORKER,
        (("self", "instruction_id"),),
        uses=("self._lock", "self.cached_bundle_processors"),
    ),
    Internal(f"{_SDK_WORKER}:BundleProcessorCache", WORKER, uses=("self.cached_bundle_processors",)),
    Internal("apache_beam.runners.worker.bundle_processor:BundleProcessor.shutdown", WORKER, (("self",),)),
)


def resolve(path: str):
    """The object at ``module:qualname``; ``AttributeError`` / ``ImportError`` when it is gone."""
    module_name, _, qualname = path.partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _module_and_name(path: str) -> str:
    module_name, _, qualname = path.partition(":")
    return f"{module_name.rpartition('.')[2]}.{qualname}"


def internal_problem(internal: Internal) -> str | None:
    """Why ``internal`` does not have the shape its patch was written for, or ``None``."""
    try:
        obj = resolve(internal.path)
    except (ImportError, AttributeError):
        return f"{_module_and_name(internal.path)} no longer exists"
    if internal.parameters:
        try:
            names = tuple(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            return f"{_module_and_name(internal.path)} has no readable signature"
        if names not in internal.parameters:
            expected = " or ".join(f"({', '.join(p)})" for p in internal.parameters)
            return (
                f"{_module_and_name(internal.path)} takes ({', '.join(names)}), the patch expects {expected}"
            )
    name = internal.path.rpartition(".")[2].rpartition(":")[2]
    for reader in internal.read_by:
        try:
            text = _source(resolve(reader))
        except (ImportError, AttributeError):
            return f"{_module_and_name(reader)} (which reads {name}) no longer exists"
        if name not in text:
            return f"{_module_and_name(reader)} no longer reads {name}, so setting it would do nothing"
    if internal.uses:
        text = _source(obj)
        missing = [use for use in internal.uses if use not in text]
        if missing:
            return f"{_module_and_name(internal.path)} no longer uses {', '.join(missing)}"
    return None


def check_local_runner_support(side: str = RUNNER, internals=INTERNALS) -> str:
    """Raise :class:`UnsupportedBeam` unless the installed Beam fits the ``side`` patches; return its version.

    ``side`` is :data:`RUNNER` (the driver process) or :data:`WORKER` (a local SDK worker).
    """
    import apache_beam

    version = apache_beam.__version__
    supported = ", ".join(SUPPORTED_BEAM_VERSIONS)
    if version not in SUPPORTED_BEAM_VERSIONS:
        raise UnsupportedBeam(
            f"Apache Beam {version} is installed, but the local runner is supported only on {supported}; {INSTALL_HINT}"
        )
    for internal in internals:
        if internal.side in (side, BOTH) and (problem := internal_problem(internal)):
            raise UnsupportedBeam(
                f"Apache Beam {version} does not fit the local runner's patches ({problem}); "
                f"supported: {supported}; {INSTALL_HINT}"
            )
    return version
