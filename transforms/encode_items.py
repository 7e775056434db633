"""Decode each needed item once: locate its video, sample its frames, write them to a fragment file."""

from __future__ import annotations

import apache_beam as beam

from transforms.item_shards import FAILED, WriteFrameFragments
from transforms.locate_videos import LocateVideos
from transforms.reuse import PlanDecodes, ReuseFrom, with_fingerprints
from transforms.sample_frames import SampleMidFrames


class EncodeItems(beam.PTransform):
    """PCollection[item_id] -> (EncodedItem, failure dicts): locate, decode once, write frame fragments.

    A ``Reshuffle`` of the IDs spreads the decoding over all workers; frames go straight from the
    decoder to a fragment file in the same fused stage, never into a shuffle.
    """

    def __init__(
        self,
        videos: str | None,
        pattern: str,
        video_map: str | None,
        sampler_config,
        work_dir: str,
        progress_every: int = 0,
        reuse: ReuseFrom | None = None,
        allow_any_uri: bool = False,
        max_attempts: int | None = None,
    ):
        super().__init__()
        self.locate = LocateVideos(videos, pattern, video_map, allow_any_uri)
        self.sampler_config = sampler_config
        self.sample = SampleMidFrames(sampler_config)
        self.write = WriteFrameFragments(work_dir, progress_every)
        self.reuse = reuse
        self.max_attempts = max_attempts

    def expand(self, item_ids):
        located = item_ids | "LocateVideos" >> self.locate
        if self.reuse is None:
            return self.decode(located.located, located[FAILED])
        return self.decode_changed(located.located, located[FAILED])

    def decode(self, videos, failures):
        """Decode every video: (item_id, uri) -> (EncodedItem, failure dicts)."""
        sampled = videos | "SpreadVideos" >> beam.Reshuffle() | "SampleMidFrames" >> self.sample
        encoded = sampled.sampled | "WriteFrameFragments" >> beam.ParDo(self.write)
        return encoded, (failures, sampled.failed) | "AllItemFailures" >> beam.Flatten()

    def decode_changed(self, videos, failures):
        """Reuse the frames of unchanged videos, decode the rest; record fingerprints and attempts."""
        from transforms.fingerprint import FingerprintVideos
        from transforms.item_facts import ReadPreviousItems

        fingerprinted = videos | "FingerprintVideos" >> FingerprintVideos(self.sampler_config.config_hash())
        previous = videos.pipeline | "ReadPreviousItems" >> ReadPreviousItems(self.reuse.version)
        planned = (
            {"uri": videos, "fingerprint": fingerprinted.fingerprints, "previous": previous}
            | "JoinFingerprintsAndPreviousItems" >> beam.CoGroupByKey()
            | "PlanDecodes"
            >> beam.ParDo(PlanDecodes(self.max_attempts)).with_outputs(
                "reused", "attempts", "given_up", main="decode"
            )
        )
        decoded, decode_failures = self.decode(planned.decode, failures)
        recorded = (
            {
                "item": decoded | "KeyDecoded" >> beam.Map(lambda item: (item.item_id, item)),
                "failure": decode_failures
                | "KeyFailure" >> beam.Map(lambda record: (record["item_id"], record)),
                "attempt": planned.attempts,
            }
            | "JoinAttempts" >> beam.CoGroupByKey()
            | "RecordFingerprints" >> beam.FlatMap(with_fingerprints).with_outputs(FAILED, main="items")
        )
        encoded = (recorded.items, planned.reused) | "DecodedAndReused" >> beam.Flatten()
        failed = (
            recorded[FAILED],
            fingerprinted.missing,
            planned.given_up,
        ) | "WithMissingVideos" >> beam.Flatten()
        return encoded, failed
