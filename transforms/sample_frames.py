"""Beam wrapper of the frame sampler: (item_id, video_uri) -> sampled frames, or a failure record."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.decode.types import ERROR_KINDS, SamplerConfig, VideoError

SAMPLED = "sampled"
FAILED = "failed"


def decode_failure(item_id: str, uri: str, error: VideoError) -> dict:
    """The failure record of a video that could not be sampled (same fields as transforms.failures)."""
    return {
        "kind": "item",
        "stage": "decode",
        "reason": error.kind,
        "message": error.message,
        "item_id": item_id,
        "uri": uri,
    }


class SampleVideoFn(beam.DoFn):
    """(item_id, uri) -> (item_id, FrameSample) on the main output, failure dicts on ``failed``.

    Each DoFn instance owns an :class:`IsolatedSampler` worker process (opened in ``setup``, closed in
    ``teardown``), so a slow, huge or crashing video costs one worker restart, never the bundle.
    Counters: ``videos_decoded`` and ``videos_failed_<kind>``.
    """

    def __init__(self, config: SamplerConfig):
        self.config = config
        self.sampler = None
        self.decoded = Metrics.counter("videorec", "videos_decoded")
        self.failed = {kind: Metrics.counter("videorec", f"videos_failed_{kind}") for kind in ERROR_KINDS}

    def setup(self):
        from transforms.decode.isolated_sampler import IsolatedSampler

        self.sampler = IsolatedSampler(self.config).__enter__()

    def process(self, element: tuple[str, str]):
        item_id, uri = element
        try:
            sample = self.sampler.sample(uri)
        except VideoError as error:
            self.failed[error.kind].inc()
            yield beam.pvalue.TaggedOutput(FAILED, decode_failure(item_id, uri, error))
            return
        self.decoded.inc()
        yield item_id, sample

    def teardown(self):
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None


class SampleMidFrames(beam.PTransform):
    """PCollection[(item_id, video_uri)] -> tagged outputs ``sampled``: (item_id, FrameSample) and
    ``failed``: failure dicts (``item_id``, ``uri``, ``stage="decode"``, ``reason``, ``message``)."""

    def __init__(self, config: SamplerConfig | None = None):
        super().__init__()
        self.config = config or SamplerConfig()

    def expand(self, videos):
        return videos | "SampleEachVideo" >> beam.ParDo(SampleVideoFn(self.config)).with_outputs(
            FAILED, main=SAMPLED
        )
