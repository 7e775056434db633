"""Retrying transient storage and network errors with exponential backoff.

:func:`with_retries` repeats an action while it fails transiently (:func:`is_transient`):
:data:`RETRIES` attempts after the first, waits from :data:`BACKOFF_S` doubling up to
:data:`MAX_BACKOFF_S`. Calls made inside the google-cloud-storage client retry with the client's own
policy on the same backoff (:func:`blobstore.gcs.read_retry`). Errors that retrying cannot fix
(404, 403, ...) are raised at once.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRIES = 5
"""Attempts after the first, for each remote open or read."""
BACKOFF_S = 0.5
"""First wait between attempts; it doubles up to :data:`MAX_BACKOFF_S`."""
MAX_BACKOFF_S = 8.0
RETRY_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses that a later attempt may not get (timeouts, throttling, server errors)."""


def is_transient(exn: BaseException) -> bool:
    """Whether retrying may fix ``exn`` (timeouts, dropped connections, 5xx / 429, GCS server errors)."""
    if isinstance(exn, urllib.error.HTTPError):
        return exn.code in RETRY_HTTP_STATUS
    if isinstance(exn, (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)):
        return True
    try:
        from google.api_core import exceptions as gcs_errors
        from google.auth import exceptions as auth_errors
        from requests import exceptions as requests_errors
    except ImportError:
        return False
    transient = (
        gcs_errors.TooManyRequests,
        gcs_errors.InternalServerError,
        gcs_errors.BadGateway,
        gcs_errors.ServiceUnavailable,
        gcs_errors.GatewayTimeout,
        auth_errors.TransportError,
        requests_errors.ConnectionError,
        requests_errors.Timeout,
        requests_errors.ChunkedEncodingError,
    )
    return isinstance(exn, transient)


def with_retries(what: str, action: Callable[[], object]):
    """``action()``, repeated with backoff while it fails transiently (see :func:`is_transient`)."""
    wait = BACKOFF_S
    for attempt in range(RETRIES + 1):
        try:
            return action()
        except Exception as exn:
            if attempt == RETRIES or not is_transient(exn):
                raise
            log.warning("%s failed (%r); retry %d/%d in %.1f s", what, exn, attempt + 1, RETRIES, wait)
            time.sleep(wait)
            wait = min(2 * wait, MAX_BACKOFF_S)
    raise AssertionError("unreachable")
