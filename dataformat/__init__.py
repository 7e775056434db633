"""The dataset format: what a dataset version is on disk (docs/FORMAT.md), and its one manifest reader.

A leaf next to :mod:`blobstore`: no Beam, no torch, nothing of the project but ``blobstore`` (the
manifest's default reader of local, ``gs://`` and ``http(s)://`` locations), so the ingest
(``transforms``), ``videorec inspect`` and the dataset roots (``pipeline``) and the trainer all
share it.

- :mod:`dataformat.format`: format version, file names and patterns, sample keys and member
  names, table schemas;
- :mod:`dataformat.manifest`: the manifest read, parsed and checked in one place, the files it
  lists verified by size and sha256, and the stored frames' settings (``sampler``).
"""
