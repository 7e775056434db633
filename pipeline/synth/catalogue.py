"""Who watches what: hidden item categories, long-tailed popularity, drifting user preferences, titles.

The planted signal: each item has a hidden category that decides how its video looks (background
hue, complementary foreground colour and a motion pattern). Each user prefers a few categories and
the preferences drift along the sequence; within a category, items are picked by a long-tailed
popularity. Category and popularity are random permutations of the item IDs, so IDs carry no signal,
and a model that sees pixels can recognise a rare item's category where an ID model cannot.
"""

from __future__ import annotations

import numpy as np

from pipeline.synth.config import (
    SEED_CATALOGUE,
    SEED_FAULTS,
    SEED_TITLE,
    SEED_USER,
    SEED_VIDEO_SPEC,
    Interactions,
    SynthConfig,
    VideoSpec,
    seeded_rng,
)

DAY_MS = 86_400_000
TITLE_WORDS = (
    "sunset", "kitten", "recipe", "dance", "street", "food", "travel", "guitar", "morning", "city",
    "puppy", "makeup", "football", "rain", "garden", "vlog", "tutorial", "prank", "ocean", "mountain",
    "café", "naïve", "日常", "美食", "旅行", "🎬", "🔥", "😂", "épisode", "señorita",
)  # fmt: skip


def assign_categories(config: SynthConfig) -> np.ndarray:
    """Hidden category of item ``i`` at index ``i - 1``: balanced, in random order relative to IDs."""
    rng = seeded_rng(config.seed, SEED_CATALOGUE)
    return rng.permutation(np.arange(config.items) % config.categories)


def popularity_weights(config: SynthConfig) -> np.ndarray:
    """Zipf weight of item ``i`` at index ``i - 1``, ranks drawn independently of ID and category."""
    rng = seeded_rng(config.seed, SEED_CATALOGUE, 1)
    ranks = rng.permutation(config.items) + 1
    return 1.0 / ranks.astype(np.float64) ** config.popularity_exponent


def new_item_mask(config: SynthConfig) -> np.ndarray:
    """Bool, item ``i`` at index ``i - 1``: the ``config.new_items`` items released late, drawn at random."""
    mask = np.zeros(config.items, dtype=bool)
    if config.new_items:
        rng = seeded_rng(config.seed, SEED_CATALOGUE, 2)
        mask[rng.choice(config.items, config.new_items, replace=False)] = True
    return mask


def release_ms(config: SynthConfig) -> int:
    """Epoch ms from which users may interact with the new items."""
    return config.start_ms + round(config.new_item_release_day * DAY_MS)


def generate_interactions(config: SynthConfig, categories: np.ndarray) -> Interactions:
    """Draw each user's sequence: preferred categories (drifting), then a popular unseen item of one.

    New items (:func:`new_item_mask`) are picked only once the user's previous interaction is at or
    after :func:`release_ms`, and then weigh as much as an average item.
    """
    weights = popularity_weights(config)
    new = new_item_mask(config)
    weights[new] = weights.mean()
    released_at = release_ms(config)
    members = [np.flatnonzero(categories == c) for c in range(config.categories)]
    result = Interactions()
    max_len = min(config.max_interactions, config.items - config.new_items)
    for user in range(1, config.users + 1):
        rng = seeded_rng(config.seed, SEED_USER, user)
        preferred = list(rng.choice(config.categories, config.categories_per_user, replace=False))
        initial = sorted(int(c) for c in preferred)
        length = int(rng.integers(config.min_interactions, max_len + 1))
        clock = config.start_ms + int(rng.integers(0, config.span_days * DAY_MS))
        seen = np.zeros(config.items, dtype=bool)
        sequence = []
        for _ in range(length):
            others = [c for c in range(config.categories) if c not in preferred]
            if others and rng.random() < config.drift_probability:
                preferred[int(rng.integers(len(preferred)))] = int(rng.choice(others))
            if rng.random() < config.off_preference_probability:
                category = int(rng.integers(config.categories))
            else:
                category = int(rng.choice(preferred))
            open_items = ~seen if clock >= released_at else ~seen & ~new
            candidates = members[category][open_items[members[category]]]
            if candidates.size == 0:
                candidates = np.flatnonzero(open_items)
            chances = weights[candidates] / weights[candidates].sum()
            index = int(rng.choice(candidates, p=chances))
            seen[index] = True
            clock += 1_000 + int(rng.exponential(2 * 3_600_000))
            sequence.append((index + 1, clock))
        result.sequences[user] = sequence
        result.preferences[user] = {"initial": initial, "final": sorted(int(c) for c in preferred)}
    return result


def video_spec(config: SynthConfig, item: int, category: int) -> VideoSpec:
    """Codec, size, rotation, rate, length and GOP of one item's video, drawn from ``(seed, item)``."""
    rng = seeded_rng(config.seed, SEED_VIDEO_SPEC, item)
    width, height = config.sizes[int(rng.integers(len(config.sizes)))]
    if rng.random() < config.portrait_fraction:
        width, height = min(width, height), max(width, height)
    else:
        width, height = max(width, height), min(width, height)
    # PyAV reads a half turn back as -180, so plant it as that.
    rotation = int(rng.choice((-90, -90, 90, -180))) if rng.random() < config.rotation_fraction else 0
    fps = int(config.fps_choices[int(rng.integers(len(config.fps_choices)))])
    seconds = rng.uniform(config.min_seconds, config.max_seconds)
    return VideoSpec(
        item=item,
        category=category,
        codec="hevc" if rng.random() < config.hevc_fraction else "h264",
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        frames=max(2, round(seconds * fps)),
        gop=int(config.gop_choices[int(rng.integers(len(config.gop_choices)))]),
        b_frames=config.b_frames,
        seed=config.seed,
        categories=config.categories,
    )


def plant_video_faults(config: SynthConfig, interactions: Interactions) -> dict[str, list[int]]:
    """Pick distinct items for each video fault, only among items that appear in the log."""
    referenced = sorted({item for seq in interactions.sequences.values() for item, _ in seq})
    wanted = config.video_fault_counts()
    if sum(wanted.values()) > len(referenced):
        raise ValueError(
            f"asked for {sum(wanted.values())} faulty videos but only {len(referenced)} items are referenced"
        )
    order = [int(i) for i in seeded_rng(config.seed, SEED_FAULTS).permutation(referenced)]
    faults, start = {}, 0
    for kind, count in wanted.items():
        faults[kind] = sorted(order[start : start + count])
        start += count
    return faults


def make_title(seed: int, item: int) -> str:
    rng = seeded_rng(seed, SEED_TITLE, item)
    words = [str(w) for w in rng.choice(TITLE_WORDS, int(rng.integers(2, 7)))]
    if rng.random() < 0.2:
        words[0] += ","
    if rng.random() < 0.1:
        words[-1] = f'"{words[-1]}"'
    return " ".join(words)
