"""Imported at start-up by the Python processes an ingest run starts while its job runs (``PYTHONPATH``).

In a local Beam SDK worker process (``CONTROL_API_SERVICE_DESCRIPTOR`` set by Beam's runner), Beam logs
a warning on import (optional BigQuery client missing) with ``logging.warning``, which installs a
stderr handler on the root logger when it has none; every worker then repeats that warning and its
own start-up lines ("Logging handler created") on the terminal. A do-nothing handler on the root
logger prevents that; the workers' logs still reach the job through Beam's logging service, and so
appear once, in the driver's log. Any other process is left alone.
"""

import logging
import os

if "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:
    logging.getLogger().addHandler(logging.NullHandler())
