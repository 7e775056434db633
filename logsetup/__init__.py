"""How every ``videorec`` command logs: ``LEVEL name: message`` lines on stderr.

A leaf of the project, below every package (``pipeline.cli`` sets logging up for every command,
``trainer.errors.run_command`` for the trainer's commands run without it, e.g. under ``torchrun``);
it imports nothing but the standard library.
"""

from __future__ import annotations

import logging

OUR_LOGGERS = ("pipeline", "transforms", "trainer", "benchmarks")
"""Packages whose INFO lines (``resumed from step N``, a broken lease...) are shown; others show WARNING+."""


class _DropBeamImportNoise(logging.Filter):
    """Hide Beam's import-time warning about optional BigQuery/apitools clients we never use."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def configure_logging() -> None:
    """``LEVEL name: message`` on stderr: INFO and up for this project, WARNING and up for libraries.

    Beam's import-time warning about optional clients is dropped, and its local job service's
    re-logging of worker warnings is silenced (worker errors still surface as job failures). Calling
    it again changes nothing.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropBeamImportNoise) for f in handler.filters):
            handler.addFilter(_DropBeamImportNoise())
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
