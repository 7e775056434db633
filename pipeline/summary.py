"""The human-readable summary printed at the end of an ingest run (and by ``videorec inspect``), and
the run's video accounting (``run_stats.json``)."""

from __future__ import annotations

from pipeline.report_text import by_reason
from transforms.compaction import ITEMS_COMPACTED
from transforms.reconcile import LEFTOVERS_REMOVED

INTERNAL_ERROR = "internal_error"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def video_stats(counters: dict[str, int], wall_s: float) -> dict:
    """What the run did with videos, from the job's Beam counters.

    ``videos_decoded``: videos the decoder opened in this run (sampled or failed; a missing file is
    not counted); ``videos_reused``:
    items whose frames came unchanged from the previous version (``videos_compacted`` of them copied out
    of a mostly dead earlier version, ``transforms.compaction``); ``videos_retried``: decoded again
    after failing last time; ``videos_given_up``: failed ``--max-attempts`` times, not tried again;
    ``videos_per_s``: ``videos_decoded`` over the wall time (reused videos cost no decoding);
    ``leftover_files_removed``: temporary files of retried attempts removed from the dataset folder
    (``transforms.reconcile``).
    """
    decoded = counters.get("videos_decoded", 0) + sum(
        n
        for name, n in counters.items()
        if name.startswith("videos_failed_") and name != "videos_failed_not_found"
    )
    return {
        "videos_decoded": decoded,
        "videos_reused": counters.get("items_reused", 0),
        "videos_compacted": counters.get(ITEMS_COMPACTED, 0),
        "videos_retried": counters.get("videos_retried", 0),
        "videos_given_up": counters.get("videos_given_up", 0),
        "videos_per_s": round(decoded / wall_s, 3) if wall_s > 0 else 0.0,
        LEFTOVERS_REMOVED: counters.get(LEFTOVERS_REMOVED, 0),
    }


def _runner(stats: dict) -> str:
    workers = f", {stats['workers']} worker(s)" if stats.get("workers") else ""
    return f"{stats['runner']}{workers}, Beam {stats['beam_version']}"


def format_summary(manifest: dict, stats: dict | None = None) -> str:
    """Items encoded, failures by reason, users, interactions, shards, bytes and (with ``stats``) the
    run's videos decoded, reused and retried, videos/s over the decoded ones, and the gates."""
    counts = manifest["counts"]
    shards = manifest["shards"]
    shard_bytes = sum(s["bytes"] for kind in ("items", "train") for s in shards[kind])
    lines = [
        f"dataset {manifest['dataset_version']} ({'frames' if manifest['has_frames'] else 'ID-only'})",
        f"  items       {counts['items_encoded']} encoded of {counts['items_seen']} seen; "
        f"failed: {by_reason(counts['items_failed'])}",
        f"  users       {counts['users_kept']} kept of {counts['users_seen']} seen; "
        f"dropped: {by_reason(counts['users_dropped'])}",
        f"  rows        {counts['rows_used']} used of {counts['rows_read']} read; "
        f"dropped: {by_reason(counts['rows_dropped'])}",
        f"  shards      {len(shards['items'])} item shards, {len(shards['train'])} train shards, "
        f"{_human_bytes(shard_bytes)}",
    ]
    internal = counts["items_failed"].get(INTERNAL_ERROR, 0)
    if internal:
        lines.append(
            f"  BUG         {internal} video(s) failed with {INTERNAL_ERROR}: an unexpected error in the "
            "sampler; their messages are in the failures files (please report them)"
        )
    if stats:
        lines.append(
            f"  run         {stats['wall_s']:.1f} s on {_runner(stats)}; videos: "
            f"{stats['videos_decoded']} decoded at {stats['videos_per_s']:.2f}/s, {stats['videos_reused']} reused, "
            f"{stats['videos_retried']} retried, {stats['videos_given_up']} given up"
        )
        if stats.get("videos_compacted"):
            lines.append(
                f"  compacted   {stats['videos_compacted']} reused item(s) copied out of earlier versions "
                "less than --compact-below in use, so prune can delete those versions"
            )
        if stats.get(LEFTOVERS_REMOVED):
            lines.append(
                f"  leftovers   {stats[LEFTOVERS_REMOVED]} temporary file(s) of retried attempts removed "
                "(each a copy of a listed file)"
            )
        for name, reasons in stats.get("side_rows_rejected", {}).items():
            lines.append(f"  {name:<11} {sum(reasons.values())} row(s) rejected: {by_reason(reasons)}")
        gates = stats.get("gates")
        if gates is not None:
            lines += [f"  NOT PUBLISHED {problem}" for problem in gates] or ["  gates       passed"]
    return "\n".join(lines)
