"""Imported at start-up by the Python processes a local ingest starts while its job runs (``PYTHONPATH``).

Only in a local Beam SDK worker of a videorec job (Beam's ``CONTROL_API_SERVICE_DESCRIPTOR`` and the
driver's ``VIDEOREC_BEAM_VERSION`` both set, see ``pipeline.local_runner.worker_environment``):

- Beam logs a warning on import (optional BigQuery client missing) with ``logging.warning``, which
  installs a stderr handler on the root logger when it has none; every worker then repeats that
  warning and its own start-up lines on the terminal. A do-nothing handler on the root logger
  prevents that; the workers' logs still reach the job through Beam's logging service.
- Ctrl-C at a terminal reaches every process of the group; the driver cleans up and stops its
  workers (``pipeline.interrupts``), so a worker ignores SIGINT instead of printing its own traceback.
- ``pipeline.local_runner.prepare_worker`` checks that this worker runs the driver's Beam and that
  Beam's internals fit the worker patches, then bounds the worker's memory.

``site.py`` prints and swallows an exception raised here, which would leave a worker running
unpatched or half-patched. So any failure prints one line and ends the process with
``WORKER_START_FAILED``; the driver turns a worker that exits into a failure of the job.
Any other process is left alone.
"""

import os

WORKER_START_FAILED = 86

if "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ and os.environ.get("VIDEOREC_BEAM_VERSION"):
    try:
        import logging
        import signal

        logging.getLogger().addHandler(logging.NullHandler())
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        from pipeline.local_runner import prepare_worker

        prepare_worker()
    except BaseException as error:  # noqa: BLE001 - any failure must end the worker, not be swallowed
        import sys

        print(
            f"videorec ingest: error: a local Beam worker could not start: {error}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(WORKER_START_FAILED)
