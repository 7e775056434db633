"""Per-key counts that leave a worker once per bundle, not once per element.

Counting items over every interaction would otherwise push one element per row through Beam's
output machinery (several microseconds each) before the combiner sees it. ``CountKeys`` counts
in a plain ``Counter`` inside each bundle and emits ``(key, count)`` pairs when the bundle
finishes, then sums them per key. A retried bundle recounts from scratch (the counter is made in
``start_bundle``), so the result never depends on bundle boundaries. Memory: one counter of the
bundle's distinct keys (items, never users).
"""

from __future__ import annotations

from collections import Counter

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue


class _CountKeysInBundle(beam.DoFn):
    def __init__(self, keys_of):
        self.keys_of = keys_of
        self.counts: Counter | None = None

    def start_bundle(self):
        self.counts = Counter()

    def process(self, element, *side_inputs):
        self.counts.update(self.keys_of(element, *side_inputs))
        return ()

    def finish_bundle(self):
        window = GlobalWindow()
        for key, count in sorted(self.counts.items()):
            yield WindowedValue((key, count), window.max_timestamp(), (window,))
        self.counts = None


class CountKeys(beam.PTransform):
    """PCollection[element] -> (key, total count) for the keys ``keys_of(element, *side_inputs)`` yields.

    The input must be in the global window (batch), where bundle-end output belongs.
    """

    def __init__(self, keys_of, *side_inputs):
        super().__init__()
        self.keys_of, self.side_inputs = keys_of, side_inputs

    def expand(self, elements):
        if not elements.windowing.is_default():
            raise ValueError("CountKeys counts per bundle and needs the global window")
        return (
            elements
            | "CountInBundle" >> beam.ParDo(_CountKeysInBundle(self.keys_of), *self.side_inputs)
            | "SumPerKey" >> beam.CombinePerKey(sum)
        )
