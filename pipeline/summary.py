"""The human-readable summary printed at the end of an ingest run (and by ``videorec inspect``)."""

from __future__ import annotations


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _by_reason(counts: dict) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"


def format_summary(manifest: dict, stats: dict | None = None) -> str:
    """Items encoded, failures by reason, users, interactions, shards, bytes and (with ``stats``) videos/s."""
    counts = manifest["counts"]
    shards = manifest["shards"]
    shard_bytes = sum(s["bytes"] for kind in ("items", "train") for s in shards[kind])
    lines = [
        f"dataset {manifest['dataset_version']} ({'frames' if manifest['has_frames'] else 'ID-only'})",
        f"  items       {counts['items_encoded']} encoded of {counts['items_seen']} seen; "
        f"failed: {_by_reason(counts['items_failed'])}",
        f"  users       {counts['users_kept']} kept of {counts['users_seen']} seen; "
        f"dropped: {_by_reason(counts['users_dropped'])}",
        f"  rows        {counts['rows_used']} used of {counts['rows_read']} read; "
        f"dropped: {_by_reason(counts['rows_dropped'])}",
        f"  shards      {len(shards['items'])} item shards, {len(shards['train'])} train shards, "
        f"{_human_bytes(shard_bytes)}",
    ]
    if stats:
        lines.append(
            f"  run         {stats['wall_s']:.1f} s, {stats['videos']} videos at {stats['videos_per_s']:.2f} videos/s "
            f"on {stats['workers']} worker(s)"
        )
    return "\n".join(lines)
