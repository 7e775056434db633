"""The blob store: files by URL (local paths, ``file://``, ``gs://``, ``http(s)://``), the one
google-cloud-storage client, ranged reads and retries of transient errors.

A leaf: it imports nothing of the project, and neither Beam nor torch, so the ingest
(``transforms``), the decoder (``transforms.decode``), the dataset roots (``pipeline``) and the
trainer all read through it. Google's libraries are imported inside the functions that use them.

- :mod:`blobstore.urls`: schemes, joining and parents of URLs;
- :mod:`blobstore.retries`: what counts as a transient error, and retrying with backoff;
- :mod:`blobstore.gcs`: the client (one per process; anonymous against ``STORAGE_EMULATOR_HOST``),
  ``gs://bucket/name`` splitting, the client-side retry policy and one ranged GET; the only module
  of the project that imports ``google.cloud.storage``;
- :mod:`blobstore.ranged_reads`: byte ranges, coalesced, and a seekable ``gs://`` reader;
- :mod:`blobstore.streams`: whole objects read front to back, resumed where a read broke.
"""
