"""The errors of dataset-root operations; every one is a :class:`VersionError`."""

from __future__ import annotations


class VersionError(Exception):
    """Base class of the errors raised by this module."""


class InvalidVersion(VersionError):
    """A version folder is incomplete or does not match its manifest; ``problems`` lists every defect."""

    def __init__(self, version_url: str, problems: list[str]):
        self.version_url = version_url
        self.problems = problems
        super().__init__(f"{version_url} is not a valid dataset version: " + "; ".join(problems))


class PublishConflict(VersionError):
    """``LATEST`` no longer holds the version the run started from: another run published first."""


class RootBusy(VersionError):
    """Another run holds a live lease on the dataset root."""


class LeaseLost(VersionError):
    """The run's lease expired and was taken over, or was released, before the run finished."""
