"""Where items' videos are: ``--videos`` + ``--video-pattern`` or a ``--video-map`` CSV, kept inside their roots.

A pattern ending in ``.*`` (``{item}.*``) takes any extension: the video folder is listed once and
its files, keyed by their name without the last extension, are joined with the items by key, so an
item ``7`` finds ``7.mp4`` or ``7.mkv`` (not ``7.a.mp4``, which is item ``7.a``'s). Exactly one file
must match; two or more fail the item as ``ambiguous_video``, naming them.
"""

from __future__ import annotations

import glob
import os
import posixpath

import apache_beam as beam
from apache_beam.metrics import Metrics

from dataformat.format import sanitize_key
from transforms import storage
from transforms.failures import failure
from transforms.keyed_csv import REJECTED, VIDEO_MAP, ReadKeyedCsv, csv_folder

FAILED = "failed"
ANY_EXTENSION = ".*"


def video_uri(root: str, pattern: str, item_id: str) -> str:
    """``root/pattern`` with ``{item}`` replaced by the item ID (``{key}``: its sanitised key)."""
    return storage.join(root, pattern.format(item=item_id, key=sanitize_key(item_id)))


def escapes_folder(relative: str) -> bool:
    """True when the relative path ``relative`` would name a file outside its folder (``..``,
    an absolute path, a URL)."""
    normal = posixpath.normpath(relative)
    return relative.startswith("/") or "://" in relative or normal == ".." or normal.startswith("../")


def _pattern_uri(item_id: str, root: str, pattern: str, allow_any_uri: bool = False):
    """``(item_id, uri)``; a ``bad_item_id`` failure when the ID would lead outside ``root``, and a
    ``bad_uri`` one when the path leads there through a symbolic link (unless ``allow_any_uri``)."""
    relative = pattern.format(item=item_id, key=sanitize_key(item_id))
    if escapes_folder(relative) or "\x00" in relative:
        message = f"the item ID makes the video path {relative!r}, outside the video folder"
        yield beam.pvalue.TaggedOutput(
            FAILED, failure("item", "locate", "bad_item_id", message, item_id=item_id)
        )
        return
    yield from _confined(item_id, storage.join(root, relative), root, allow_any_uri)


def any_extension(pattern: str) -> bool:
    """Whether ``pattern`` ends in ``.*``: any extension (module docstring)."""
    return pattern.endswith(ANY_EXTENSION)


def any_extension_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be an any-extension pattern (a placeholder outside the file name: the one
    folder listed would not be known), or None."""
    if any_extension(pattern) and "{" in posixpath.dirname(pattern):
        return (
            f"--video-pattern {pattern!r}: a pattern ending in .* may use {{item}} or {{key}} only in the "
            "file name (e.g. {item}.* or clips/{item}.*); list other layouts in a --video-map CSV"
        )
    return None


def video_exists(uri: str) -> bool:
    """Whether the video at ``uri`` exists; for an any-extension ``uri`` (``.../7.*``), whether one file
    named like it, with one extension, does (the first items' check before the job)."""
    if not any_extension(uri):
        return storage.path_exists(uri)
    stem = uri[: -len(ANY_EXTENSION)]
    name = stem.rsplit("/", 1)[-1]
    matches = storage.match(glob.escape(stem) + ANY_EXTENSION)
    return any(path.rsplit("/", 1)[-1].rsplit(".", 1)[0] == name for path in matches)


def _pattern_stem(item_id: str, folder: str, pattern: str):
    """``(file name without extension, item_id)`` for an any-extension pattern (files of ``folder``,
    ``pattern``'s fixed folder part, are keyed alike); ``bad_item_id`` when the ID leaves that folder."""
    relative = pattern[: -len(ANY_EXTENSION)].format(item=item_id, key=sanitize_key(item_id))
    if escapes_folder(relative) or "\x00" in relative or posixpath.dirname(relative) != folder:
        message = (
            f"the item ID makes the video path {relative + ANY_EXTENSION!r}, outside the listed video folder"
        )
        yield beam.pvalue.TaggedOutput(
            FAILED, failure("item", "locate", "bad_item_id", message, item_id=item_id)
        )
        return
    yield posixpath.basename(relative), item_id


def listed_videos(folder: str):
    """``(file name without its last extension, uri)`` of every entry of ``folder`` (local: streamed
    with ``os.scandir``, whatever the entry is, so a folder or a pipe named like a video is reported
    by the decoder as what it is; ``gs://``: one listing)."""
    if storage.is_remote(folder):
        names = (uri.rsplit("/", 1)[1] for uri in storage.match(folder.rstrip("/") + "/*"))
    else:
        names = (entry.name for entry in os.scandir(folder))
    for name in names:
        if "." in name.strip("."):
            yield name.rsplit(".", 1)[0], storage.join(folder, name)


def _matched_file(joined: tuple, root: str, allow_any_uri: bool):
    """``(item_id, uri)`` for each needed item of a file-name stem with exactly one file; else
    ``not_found`` or ``ambiguous_video`` failures (and ``bad_uri`` for a link out of ``root``).
    ``joined`` is ``(stem, {"items", "files"})``, or ``(None, {"bad_id": failure})``, passed on."""
    stem, sides = joined
    if stem is None:  # an item ID that leaves the folder (_pattern_stem's failure), passed through
        yield beam.pvalue.TaggedOutput(FAILED, sides["bad_id"])
        return
    files = sorted(sides["files"])
    for item_id in sides["items"]:
        if len(files) == 1:
            yield from _confined(item_id, files[0], root, allow_any_uri)
            continue
        if files:
            reason = "ambiguous_video"
            message = f"{len(files)} files match {stem}{ANY_EXTENSION}: {', '.join(files)}; keep one, or use --video-map"
        else:
            reason, message = "not_found", f"no file in the video folder matches {stem}{ANY_EXTENSION}"
        yield beam.pvalue.TaggedOutput(FAILED, failure("item", "locate", reason, message, item_id=item_id))


def _confined(item_id: str, uri: str, root: str, allow_any_uri: bool):
    """``(item_id, uri)``, or a ``bad_uri`` failure when ``uri`` leads out of ``root`` through a link."""
    if allow_any_uri or _inside(uri, root):
        yield item_id, uri
        return
    message = (
        f"the video path {uri} is a link to {os.path.realpath(uri)}, outside the video folder "
        f"{root}; pass --allow-any-uri to follow it"
    )
    yield beam.pvalue.TaggedOutput(FAILED, failure("item", "locate", "bad_uri", message, item_id=item_id))


class LocateVideos(beam.PTransform):
    """PCollection[item_id] -> (item_id, uri) (main) + failure dicts (``failed``) for items without one.

    Either ``root`` + ``pattern`` (every item gets a URI inside ``root``; a missing file fails later
    as ``not_found``; an ID that would lead outside ``root`` fails as ``bad_item_id``, a path that
    leads there through a symbolic link as ``bad_uri``; an any-extension pattern joins the items with
    the folder's listing: no file is ``not_found``, several ``ambiguous_video``) or ``mapping_path``,
    a CSV of item -> uri read in splits and joined by key (no entry: ``no_video``; a URI outside the
    CSV's folder, by its resolved path: ``bad_uri``). With ``allow_any_uri`` neither kind of
    ``bad_uri`` applies.
    """

    def __init__(self, root: str | None, pattern: str, mapping_path: str | None, allow_any_uri: bool = False):
        super().__init__()
        self.root, self.pattern, self.mapping_path = root, pattern, mapping_path
        self.allow_any_uri = allow_any_uri

    def expand(self, item_ids):
        if self.mapping_path is not None:
            return self._mapped(item_ids)
        if any_extension(self.pattern):
            return self._listed(item_ids)
        return item_ids | "ApplyPattern" >> beam.FlatMap(
            _pattern_uri, self.root, self.pattern, self.allow_any_uri
        ).with_outputs(FAILED, main="located")

    def _mapped(self, item_ids):
        inside = None if self.allow_any_uri else csv_folder(self.mapping_path)
        mapping = item_ids.pipeline | "ReadMapping" >> ReadKeyedCsv(self.mapping_path, VIDEO_MAP)
        return (
            {"needed": item_ids | "KeyNeeded" >> beam.Map(lambda item: (item, None)), "uri": mapping}
            | "JoinMapping" >> beam.CoGroupByKey()
            | "KeepNeeded" >> beam.FlatMap(_mapped_uri, inside).with_outputs(FAILED, main="located")
        )

    def _listed(self, item_ids):
        folder = posixpath.dirname(self.pattern)
        stems = item_ids | "FileNameStems" >> beam.FlatMap(_pattern_stem, folder, self.pattern).with_outputs(
            FAILED, main="stems"
        )
        files = (
            item_ids.pipeline
            | "VideoFolder" >> beam.Create([storage.join(self.root, folder) if folder else self.root])
            | "ListVideos" >> beam.FlatMap(listed_videos)
        )
        bad_ids = stems[FAILED] | "BadIdsToJoin" >> beam.Map(lambda record: (None, {"bad_id": record}))
        return (
            ({"items": stems.stems, "files": files} | "JoinFiles" >> beam.CoGroupByKey(), bad_ids)
            | "WithBadIds" >> beam.Flatten()
            | "OneFileEach"
            >> beam.FlatMap(_matched_file, self.root, self.allow_any_uri).with_outputs(FAILED, main="located")
        )


def _inside(uri: str, folder: str) -> bool:
    """True when ``uri`` lies under ``folder``: by the text of a ``gs://`` path, and for a local one by
    its resolved path (symbolic links followed, in the folder's own path too)."""
    if storage.is_remote(uri) != storage.is_remote(folder):
        return False
    if storage.is_remote(uri):
        return posixpath.normpath(uri.split("://", 1)[1]).startswith(
            folder.split("://", 1)[1].rstrip("/") + "/"
        )
    return os.path.realpath(uri).startswith(os.path.realpath(folder).rstrip("/") + "/")


def _mapped_uri(joined: tuple[str, dict], inside: str | None):
    """``(item_id, uri)`` of a needed item; ``no_video`` or (with ``inside``, the only folder allowed)
    ``bad_uri`` failures."""
    item_id, sides = joined
    if not sides["needed"]:
        return
    if sides["uri"]:
        uri = sorted(sides["uri"])[0]
        if len(sides["uri"]) > 1:
            Metrics.counter("videorec", f"{VIDEO_MAP.name}{REJECTED}duplicate_item").inc(
                len(sides["uri"]) - 1
            )
        if inside is not None and not _inside(uri, inside):
            message = (
                f"the video map names {uri}, outside its folder {inside}; pass --allow-any-uri to allow it"
            )
            yield beam.pvalue.TaggedOutput(
                FAILED, failure("item", "locate", "bad_uri", message, item_id=item_id)
            )
            return
        yield item_id, uri
    else:
        yield beam.pvalue.TaggedOutput(
            FAILED,
            failure(
                "item", "locate", "no_video", "the video mapping has no entry for this item", item_id=item_id
            ),
        )
