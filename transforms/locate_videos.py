"""Where items' videos are: ``--videos`` + ``--video-pattern`` or a ``--video-map`` CSV, kept inside their roots."""

from __future__ import annotations

import csv
import io
import os
import posixpath

import apache_beam as beam

from transforms import storage
from transforms.failures import failure
from transforms.format import sanitize_key

FAILED = "failed"


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
    uri = storage.join(root, relative)
    if not allow_any_uri and not _inside(uri, root):
        message = (
            f"the video path {uri} is a link to {os.path.realpath(uri)}, outside the video folder "
            f"{root}; pass --allow-any-uri to follow it"
        )
        yield beam.pvalue.TaggedOutput(FAILED, failure("item", "locate", "bad_uri", message, item_id=item_id))
        return
    yield item_id, uri


def parse_video_mapping(text: str, mapping_path: str) -> dict[str, str]:
    """``item -> uri`` from a CSV with a header naming ``item`` and ``uri`` (or ``video``/``path``) columns.

    Relative URIs are resolved against the mapping file's folder.
    """
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower().lstrip("\ufeff") for h in next(reader, [])]
    try:
        item_col = next(header.index(n) for n in ("item", "item_id") if n in header)
        uri_col = next(header.index(n) for n in ("uri", "video", "path", "url") if n in header)
    except StopIteration:
        raise ValueError(f"{mapping_path}: header {header} needs an item column and a uri column") from None
    folder = mapping_path.rsplit("/", 1)[0] if "/" in mapping_path else "."
    mapping = {}
    for fields in reader:
        if len(fields) > max(item_col, uri_col) and fields[item_col].strip():
            uri = fields[uri_col].strip()
            mapping[fields[item_col].strip()] = (
                uri if storage.is_remote(uri) or uri.startswith("/") else storage.join(folder, uri)
            )
    return mapping


class LocateVideos(beam.PTransform):
    """PCollection[item_id] -> (item_id, uri) (main) + failure dicts (``failed``) for items without one.

    Either ``root`` + ``pattern`` (every item gets a URI inside ``root``; a missing file fails later
    as ``not_found``; an ID that would lead outside ``root`` fails as ``bad_item_id``, a path that
    leads there through a symbolic link as ``bad_uri``) or ``mapping_path``, a CSV of item -> uri (no
    entry: ``no_video``; a URI outside the CSV's folder, by its resolved path: ``bad_uri``). With
    ``allow_any_uri`` neither kind of ``bad_uri`` applies.
    """

    def __init__(self, root: str | None, pattern: str, mapping_path: str | None, allow_any_uri: bool = False):
        super().__init__()
        self.root, self.pattern, self.mapping_path = root, pattern, mapping_path
        self.allow_any_uri = allow_any_uri

    def expand(self, item_ids):
        if self.mapping_path is None:
            return item_ids | "ApplyPattern" >> beam.FlatMap(
                _pattern_uri, self.root, self.pattern, self.allow_any_uri
            ).with_outputs(FAILED, main="located")
        mapping_path = self.mapping_path
        inside = None if self.allow_any_uri else mapping_folder(mapping_path)
        mapping = (
            item_ids.pipeline
            | "MappingFile" >> beam.Create([mapping_path])
            | "ReadMapping"
            >> beam.FlatMap(
                lambda path: parse_video_mapping(storage.read_bytes(path).decode("utf-8"), path).items()
            )
        )
        return (
            {"needed": item_ids | "KeyNeeded" >> beam.Map(lambda item: (item, None)), "uri": mapping}
            | "JoinMapping" >> beam.CoGroupByKey()
            | "KeepNeeded" >> beam.FlatMap(_mapped_uri, inside).with_outputs(FAILED, main="located")
        )


def mapping_folder(mapping_path: str) -> str:
    """The folder of a video map: where its relative URIs resolve and its URIs must stay."""
    return mapping_path.rsplit("/", 1)[0] if "/" in mapping_path else "."


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
