"""Sample videos in a worker process that is killed and replaced when a video takes too long,
takes too much memory or crashes the decoder; the caller always gets a FrameSample or a VideoError.

Limits are enforced from outside the decode:

* time: the parent waits at most ``config.timeout_s`` for the answer, then kills the worker
  (``timeout``);
* memory: the parent polls the worker's resident set and kills it above ``config.max_memory_mb``
  (``memory``); inside the worker an address-space limit (``RLIMIT_AS``, the same margin above the
  idle worker's size) turns a sudden huge allocation into a MemoryError before the poll could see it;
* crash: a worker that dies mid-video (a segfault in a decoder) gives ``corrupt``;
* a Python exception in the sampler is a bug and gives ``internal_error``.

The worker is a fresh ``python -m transforms.decode.isolated_sampler`` (no fork of a threaded parent, no
re-import of the caller's main module); requests and answers are JSON plus raw JPEG bytes on two pipes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path

from transforms.decode.sampler import UNEXPECTED, sample_video
from transforms.decode.types import FrameSample, SamplerConfig, VideoError

POLL_S = 0.02
START_TIMEOUT_S = 120.0
# The in-worker cooperative deadline only backs up the parent's hard limit.
WORKER_DEADLINE_FACTOR = 2.0


def _rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 when it cannot be read, e.g. the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _limit_address_space(margin_mb: int) -> None:
    try:
        import resource

        with open("/proc/self/statm") as handle:
            virtual_pages = int(handle.read().split()[0])
        limit = virtual_pages * os.sysconf("SC_PAGE_SIZE") + margin_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        pass  # not Linux: the parent's RSS watch still applies


def _answer(conn: Connection, header: dict, frames: list[bytes] = ()) -> None:
    conn.send_bytes(json.dumps({**header, "frames": len(frames)}).encode())
    for frame in frames:
        conn.send_bytes(frame)


def serve(requests: Connection, answers: Connection, config: SamplerConfig) -> None:
    """Worker loop: read a URI per request, answer with the sample or the error (JSON + JPEG blobs)."""
    config = dataclasses.replace(config, timeout_s=config.timeout_s * WORKER_DEADLINE_FACTOR)
    import transforms.decode.pyav_backend  # noqa: F401  (import before the address-space limit)

    _limit_address_space(config.max_memory_mb)
    _answer(answers, {"status": "ready", "pid": os.getpid()})
    while True:
        try:
            request = json.loads(requests.recv_bytes())
        except EOFError:
            return
        if request.get("stop"):
            return
        uri = request["uri"]
        try:
            sample = sample_video(uri, config)
            _answer(answers, {"status": "ok", "meta": sample.meta}, sample.frames)
        except VideoError as exc:
            _answer(answers, {"status": "error", "kind": exc.kind, "message": exc.message})
        except MemoryError:
            message = f"{uri}: out of memory (above {config.max_memory_mb} MiB)"
            _answer(answers, {"status": "error", "kind": "memory", "message": message})
        except Exception as exc:  # noqa: BLE001 - a sampler bug must not kill the pipeline
            message = UNEXPECTED.format(uri=uri) + f"{type(exc).__name__}: {exc}"
            _answer(answers, {"status": "error", "kind": "internal_error", "message": message})


def main(argv: list[str]) -> None:
    """Worker entry point: ``python -m transforms.decode.isolated_sampler REQUEST_FD ANSWER_FD CONFIG_JSON``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, answers = Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False)
    serve(requests, answers, SamplerConfig.from_dict(json.loads(argv[2])))


# What a Beam SDK worker process has in its environment that the sampler's process must not inherit:
# with them it would import Beam's worker and gRPC at start-up (the driver's worker site runs when
# CONTROL_API_SERVICE_DESCRIPTOR is set), about 125 MB counted against the sampler's memory limit.
BEAM_WORKER_VARIABLES = (
    "CONTROL_API_SERVICE_DESCRIPTOR",
    "LOGGING_API_SERVICE_DESCRIPTOR",
    "STATUS_API_SERVICE_DESCRIPTOR",
    "ARTIFACT_API_SERVICE_DESCRIPTOR",
    "PROVISION_API_SERVICE_DESCRIPTOR",
    "PIPELINE_OPTIONS",
    "RUNNER_CAPABILITIES",
    "WORKER_ID",
    # set by a videorec driver for its Beam workers (pipeline/local_runner.py); the second names the
    # PYTHONPATH entry of their start-up module
    "VIDEOREC_BEAM_VERSION",
    "VIDEOREC_WORKER_SITE",
)


def sampler_environment(parent: Mapping[str, str], package_root: str) -> dict[str, str]:
    """The sampler process's environment: ``parent`` without Beam's worker variables and the worker
    site, with ``package_root`` first on ``PYTHONPATH`` so ``transforms.decode`` imports."""
    worker_site = parent.get("VIDEOREC_WORKER_SITE")
    inherited = [p for p in parent.get("PYTHONPATH", "").split(os.pathsep) if p and p != worker_site]
    env = {name: value for name, value in parent.items() if name not in BEAM_WORKER_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([package_root, *inherited])
    return env


class IsolatedSampler:
    """``with IsolatedSampler(config) as sampler: sample = sampler.sample(uri)``.

    One worker process at a time; not thread-safe (use one per thread, as Beam DoFns do).
    """

    def __init__(self, config: SamplerConfig | None = None):
        self.config = config or SamplerConfig()
        self._process: subprocess.Popen | None = None
        self._requests: Connection | None = None
        self._answers: Connection | None = None
        self.workers_started = 0

    def __enter__(self) -> IsolatedSampler:
        self._ensure_worker()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def worker_pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _ensure_worker(self) -> None:
        if self._alive():
            return
        self._discard_worker()
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        env = sampler_environment(os.environ, package_root=str(Path(__file__).resolve().parents[2]))
        command = [
            sys.executable,
            "-m",
            "transforms.decode.isolated_sampler",
            str(request_read),
            str(answer_write),
        ]
        self._process = subprocess.Popen(
            [*command, json.dumps(self.config.to_dict())],
            pass_fds=(request_read, answer_write),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        os.close(request_read)
        os.close(answer_write)
        self._requests = Connection(request_write, readable=False)
        self._answers = Connection(answer_read, writable=False)
        if not self._answers.poll(START_TIMEOUT_S):
            self._discard_worker()
            raise RuntimeError(f"the sampler worker did not start within {START_TIMEOUT_S:g} s")
        try:
            self._read_answer()
        except EOFError:
            self._discard_worker()
            raise RuntimeError("the sampler worker exited while starting") from None
        self.workers_started += 1

    def _read_answer(self) -> tuple[dict, list[bytes]]:
        header = json.loads(self._answers.recv_bytes())
        return header, [self._answers.recv_bytes() for _ in range(header["frames"])]

    def _discard_worker(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
        for conn in (self._requests, self._answers):
            if conn is not None:
                conn.close()
        self._process, self._requests, self._answers = None, None, None

    def close(self) -> None:
        """Stop the worker (politely, then by force)."""
        if self._alive():
            try:
                self._requests.send_bytes(json.dumps({"stop": True}).encode())
                self._process.wait(2)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        self._discard_worker()

    def _crashed(self, uri: str) -> VideoError:
        try:
            code = self._process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        self._discard_worker()
        if code is not None and code < 0:
            reason = f"signal {signal.Signals(-code).name}"
        else:
            reason = f"exit code {code}"
        return VideoError("corrupt", f"{uri}: the decoder crashed the sampler worker ({reason})")

    def sample(self, uri: str) -> FrameSample:
        """Sample ``uri`` in the worker. Raises VideoError (including ``timeout`` and ``memory``)."""
        self._ensure_worker()
        self._requests.send_bytes(json.dumps({"uri": uri}).encode())
        deadline = time.monotonic() + self.config.timeout_s
        while not self._answers.poll(POLL_S):
            if self._process.poll() is not None:
                raise self._crashed(uri)
            if time.monotonic() > deadline:
                self._discard_worker()
                raise VideoError(
                    "timeout", f"{uri}: not sampled within {self.config.timeout_s:g} s; worker killed"
                )
            rss = _rss_mb(self._process.pid)
            if rss > self.config.max_memory_mb:
                self._discard_worker()
                raise VideoError(
                    "memory",
                    f"{uri}: the worker used {rss:.0f} MiB, "
                    f"above max_memory_mb={self.config.max_memory_mb}; killed",
                )
        try:
            header, frames = self._read_answer()
        except (EOFError, OSError):
            raise self._crashed(uri) from None
        if header["status"] == "ok":
            return FrameSample(frames=frames, meta=header["meta"])
        if header["kind"] == "memory":
            self._discard_worker()
        raise VideoError(header["kind"], header["message"])


if __name__ == "__main__":
    main(sys.argv[1:])
