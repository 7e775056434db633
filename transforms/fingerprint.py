"""Video fingerprints and the incremental decode plan: what changed since the previous dataset version.

A fingerprint identifies "this video, as this sampler config would sample it", from metadata only
(no byte of the video is read):

- local files: size + modification time in nanoseconds;
- ``gs://`` objects: size + the MD5 of the content that GCS keeps for every non-composite object
  (so re-uploading identical bytes changes nothing), or the object generation for composite objects,
  which have no MD5 (any rewrite counts as a change);
- plus the sampler's ``SamplerConfig.config_hash()``, so changing the frame count, size, resize mode,
  JPEG quality or sampler version re-decodes everything.

``plan_decodes`` compares the fingerprints of the current inputs with what the previous version
recorded, and says which items to decode (new, changed, failed last time) and which to reuse.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from blobstore import gcs
from transforms.decode.video_source import is_local, local_path, not_a_file
from transforms.failures import failure

FINGERPRINT_SCHEME = "fp1"
"""Prefix of every fingerprint; bump it when the recipe changes so old fingerprints never match."""

MISSING = "missing"
"""Output tag of ``FingerprintVideos`` for items whose video does not exist."""


@dataclass(frozen=True)
class VideoStat:
    """What the store says about one video file, without reading it."""

    uri: str
    """The video's location as given (local path, ``file://`` or ``gs://``)."""
    size: int
    """Size in bytes."""
    change_token: str
    """What changes when the content changes: ``mtime_ns=...``, ``md5=...`` or ``generation=...``."""


def stat_video(uri: str, *, client=None) -> VideoStat:
    """Size and change token of one video (one ``stat`` or one GCS metadata request).

    Raises ``FileNotFoundError`` when nothing exists at ``uri``.
    """
    if is_local(uri):
        try:
            st = os.stat(local_path(uri))  # raises FileNotFoundError
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            raise FileNotFoundError(not_a_file(local_path(uri))) from None  # a link loop: no file there
        return VideoStat(uri, st.st_size, f"mtime_ns={st.st_mtime_ns}")
    if not uri.startswith("gs://"):
        raise ValueError(f"cannot fingerprint {uri!r}: only local paths and gs:// are supported")
    bucket, name = gcs.split_gcs_url(uri)
    blob = (client or gcs.gcs_client()).bucket(bucket).get_blob(name)
    if blob is None:
        raise FileNotFoundError(f"no such video object: {uri}")
    return _blob_stat(uri, blob)


def stat_tree(location: str, *, client=None) -> Iterator[VideoStat]:
    """Every file under a local folder or ``gs://`` prefix, sorted by URI.

    On GCS this is one listing request per 1000 objects instead of one request per video.
    """
    if is_local(location):
        root = local_path(location)
        paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)
        for path in paths:
            yield stat_video(path)
        return
    bucket, prefix = gcs.split_gcs_url(location)
    prefix = f"{prefix}/" if prefix else ""
    for blob in (client or gcs.gcs_client()).list_blobs(bucket, prefix=prefix):
        yield _blob_stat(f"gs://{bucket}/{blob.name}", blob)


def gcs_change_token(md5_hash: str | None, generation: int) -> str:
    """The content MD5 when GCS has one; composite objects have none, so their generation stands in."""
    return f"md5={md5_hash}" if md5_hash else f"generation={generation}"


def _blob_stat(uri: str, blob) -> VideoStat:
    return VideoStat(uri, blob.size, gcs_change_token(blob.md5_hash, blob.generation))


def fingerprint(stat: VideoStat, sampler_config_hash: str) -> str:
    """A stable string that changes when the video or the sampler config changes.

    The URI is deliberately left out: moving the videos to a new bucket does not re-decode them.
    """
    if not sampler_config_hash:
        raise ValueError("sampler_config_hash is empty")
    content = {"size": stat.size, "change": stat.change_token, "sampler": sampler_config_hash}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]
    return f"{FINGERPRINT_SCHEME}-{digest}"


def fingerprint_video(uri: str, sampler_config_hash: str, *, client=None) -> str:
    """``fingerprint(stat_video(uri), sampler_config_hash)``."""
    return fingerprint(stat_video(uri, client=client), sampler_config_hash)


# --------------------------------------------------------------------------------------------------
# The decode plan
# --------------------------------------------------------------------------------------------------

NEW, CHANGED, RETRY = "new", "changed", "retry"
OK = "ok"


@dataclass(frozen=True)
class PreviousItem:
    """What the previous version recorded for an item."""

    fingerprint: str | None
    """Its video's fingerprint then (None if it had none)."""
    status: str
    """``ok`` when it made it into the dataset, else the failure reason."""
    attempts: int
    """Decode attempts made so far for this fingerprint (1 after the first try)."""


@dataclass(frozen=True)
class DecodePlan:
    """Which items the run decodes and which it copies from the previous version."""

    to_decode: tuple[str, ...]
    """Items to decode, sorted: new, changed, or failed last time with the same fingerprint."""
    to_reuse: tuple[str, ...]
    """Items whose frames are taken from the previous version, sorted: same fingerprint, ``ok`` last time."""
    attempts: Mapping[str, int] = field(default_factory=dict)
    """For every item in ``to_decode``: the attempt number this run records (1 for new or changed)."""
    reasons: Mapping[str, str] = field(default_factory=dict)
    """For every item in ``to_decode``: ``new``, ``changed`` or ``retry``."""
    given_up: tuple[str, ...] = ()
    """Failed items not retried because they reached ``max_attempts``; they stay failures, sorted."""
    removed: tuple[str, ...] = ()
    """Items of the previous version that are no longer in the input, sorted."""

    @property
    def retries(self) -> dict[str, int]:
        """Retried items -> attempt number of this run."""
        return {item: self.attempts[item] for item in self.to_decode if self.reasons[item] == RETRY}


def plan_decodes(
    previous_items: Mapping[str, PreviousItem | tuple[str | None, str, int]],
    current: Mapping[str, str],
    *,
    max_attempts: int | None = None,
) -> DecodePlan:
    """Decide, per item, whether to decode it or reuse the previous version's frames.

    Args:
        previous_items: ``item_id -> (fingerprint, status, attempts)`` as the previous version
            recorded them (``PreviousItem`` or a plain tuple); empty for a first run.
        current: ``item_id -> fingerprint`` of every item with a video in this run's input.
        max_attempts: stop retrying an unchanged failed video after this many attempts (None: always retry).
    """
    decode: dict[str, tuple[str, int]] = {}
    reuse, given_up = [], []
    for item_id, fp in current.items():
        before = previous_items.get(item_id)
        if before is None:
            decode[item_id] = (NEW, 1)
            continue
        before = PreviousItem(*before) if isinstance(before, tuple) else before
        if before.fingerprint != fp:
            decode[item_id] = (CHANGED, 1)
        elif before.status == OK:
            reuse.append(item_id)
        elif max_attempts is not None and before.attempts >= max_attempts:
            given_up.append(item_id)
        else:
            decode[item_id] = (RETRY, before.attempts + 1)
    order = sorted(decode)
    return DecodePlan(
        to_decode=tuple(order),
        to_reuse=tuple(sorted(reuse)),
        attempts={item: decode[item][1] for item in order},
        reasons={item: decode[item][0] for item in order},
        given_up=tuple(sorted(given_up)),
        removed=tuple(sorted(set(previous_items) - set(current))),
    )


# --------------------------------------------------------------------------------------------------
# Beam
# --------------------------------------------------------------------------------------------------


class _FingerprintFn(beam.DoFn):
    def __init__(self, sampler_config_hash: str):
        self._sampler_config_hash = sampler_config_hash
        self._client = None
        self._fingerprinted = Metrics.counter("videorec", "videos_fingerprinted")
        self._missing = Metrics.counter("videorec", "videos_fingerprint_not_found")

    def setup(self):
        self._client = None  # a GCS client is made on the first gs:// URI only (local runs need none)

    def _gcs(self):
        if self._client is None:
            self._client = gcs.gcs_client()
        return self._client

    def process(self, element: tuple[str, str]):
        item_id, uri = element
        try:
            client = None if is_local(uri) else self._gcs()
            fp = fingerprint(stat_video(uri, client=client), self._sampler_config_hash)
        except FileNotFoundError as exc:
            self._missing.inc()
            yield pvalue.TaggedOutput(
                MISSING, failure("item", "fingerprint", "not_found", str(exc), item_id=item_id, uri=uri)
            )
            return
        self._fingerprinted.inc()
        yield item_id, fp


class FingerprintVideos(beam.PTransform):
    """PCollection[(item_id, video uri)] -> PCollection[(item_id, fingerprint)], plus tag ``missing``.

    ``missing`` holds one failure record (``transforms.failures.failure``, reason ``not_found`` as the
    sampler reports it) per item whose video does not exist. Counters: ``videos_fingerprinted``,
    ``videos_fingerprint_not_found`` (``CountFailures`` downstream counts the records by reason).
    """

    def __init__(self, sampler_config_hash: str):
        super().__init__()
        self._sampler_config_hash = sampler_config_hash

    def expand(self, videos):
        return videos | "StatEachVideo" >> beam.ParDo(_FingerprintFn(self._sampler_config_hash)).with_outputs(
            MISSING, main="fingerprints"
        )
