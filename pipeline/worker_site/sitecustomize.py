"""Imported at start-up by the local Beam SDK worker processes of an ingest run (``PYTHONPATH``).

Beam logs a warning on import (optional BigQuery client missing) with ``logging.warning``, which
installs a stderr handler on the root logger when it has none; every worker then repeats that
warning and its own start-up lines ("Logging handler created") on the terminal. A do-nothing
handler on the root logger prevents that; the workers' logs still reach the job through Beam's
logging service, and so appear once, in the driver's log.
"""

import logging

logging.getLogger().addHandler(logging.NullHandler())
