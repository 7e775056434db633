"""New items: planted by synth (released late), split off at ingest, reported per subset by the trainer."""

from __future__ import annotations

import pytest

from pipeline.synth import SynthConfig
from pipeline.synth.catalogue import assign_categories, generate_interactions, new_item_mask, release_ms


def test_synth_new_items_appear_only_after_their_release():
    config = SynthConfig(users=300, items=100, new_items=10, seed=3)
    interactions = generate_interactions(config, assign_categories(config))
    new = new_item_mask(config)
    assert int(new.sum()) == 10
    new_rows = [(i, t) for seq in interactions.sequences.values() for i, t in seq if new[i - 1]]
    old_rows = [(i, t) for seq in interactions.sequences.values() for i, t in seq if not new[i - 1]]
    assert new_rows, "new items must be watched after their release"
    assert min(t for _, t in new_rows) >= release_ms(config)
    assert min(t for _, t in old_rows) < release_ms(config)
    last_is_new = sum(1 for seq in interactions.sequences.values() if new[seq[-1][0] - 1])
    assert last_is_new >= 10  # enough users whose test target is a new item


def test_synth_new_items_default_off_and_validated():
    plain = SynthConfig(users=60, items=40, seed=1)
    assert not new_item_mask(plain).any()
    with pytest.raises(ValueError, match="new_items"):
        SynthConfig(users=10, items=10, new_items=10).validate()
