"""Imported at start-up by the Python processes an ingest run starts while its job runs (``PYTHONPATH``).

In a local Beam SDK worker process (``CONTROL_API_SERVICE_DESCRIPTOR`` set by Beam's runner):

- Beam logs a warning on import (optional BigQuery client missing) with ``logging.warning``, which
  installs a stderr handler on the root logger when it has none; every worker then repeats that
  warning and its own start-up lines ("Logging handler created") on the terminal. A do-nothing
  handler on the root logger prevents that; the workers' logs still reach the job through Beam's
  logging service, and so appear once, in the driver's log.
- Its data plane sends output in messages of a few MB and queues little of it, and each finished
  bundle's processor is shut down rather than cached (``pipeline.local_runner.bound_worker_memory``):
  with Beam's defaults a worker keeps up to 200 MB of output queued and every finished stage's
  buffers.
- Ctrl-C at a terminal reaches every process of the group; the driver cleans up and stops its
  workers (``pipeline.runs``), so a worker ignores SIGINT instead of printing its own traceback.

Any other process is left alone.
"""

import logging
import os
import signal

if "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:
    logging.getLogger().addHandler(logging.NullHandler())
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from pipeline.local_runner import bound_worker_memory

    bound_worker_memory()
