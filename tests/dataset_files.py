"""Read a written dataset version's sharded tables and failure records the way its users do."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from transforms.failures import read_failures
from transforms.manifest import read_version_manifest
from transforms.tables import read_table


def dataset_table(dataset: str | Path, name: str) -> pa.Table:
    """Every part of table ``name`` (``items`` or ``sequences``) of the dataset, concatenated."""
    return read_table(str(dataset), read_version_manifest(str(dataset)), name)


def dataset_failures(dataset: str | Path) -> list[dict]:
    """Every failure record of the dataset."""
    return read_failures(str(dataset), read_version_manifest(str(dataset)))
