"""Contact sheets: one image per sampled item (its frames in a row) or user (one row per item).

A data engineer sees in one picture whether the sampler took the middle of each video. Each row
is labelled with the item ID and, when the item sample carries one, its title.
"""

from __future__ import annotations

import io
import json

from PIL import Image, ImageDraw, ImageFont

from dataformat.format import ITEM_FRAME_PREFIX, METADATA_FIELD, frame_number, is_frame_member, train_frame_of

LABEL_HEIGHT = 14
GAP = 2


def contact_sheet(rows: list[tuple[str, list[bytes]]]) -> Image.Image:
    """``rows`` of ``(label, JPEG frames)`` -> an RGB image: each row's label above its frames, left to right."""
    decoded = [(label, [Image.open(io.BytesIO(f)).convert("RGB") for f in frames]) for label, frames in rows]
    tile_w = max((im.width for _, ims in decoded for im in ims), default=1)
    tile_h = max((im.height for _, ims in decoded for im in ims), default=1)
    columns = max((len(ims) for _, ims in decoded), default=1)
    width = max(columns * (tile_w + GAP) + GAP, 160)
    height = len(decoded) * (LABEL_HEIGHT + tile_h + GAP) + GAP
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row, (label, images) in enumerate(decoded):
        top = GAP + row * (LABEL_HEIGHT + tile_h + GAP)
        draw.text((GAP, top), label, fill="black", font=font)
        for column, image in enumerate(images):
            sheet.paste(image, (GAP + column * (tile_w + GAP), top + LABEL_HEIGHT))
    return sheet


def frames_by_sample(members: dict[str, bytes]) -> list[tuple[str, list[bytes]]]:
    """The rows of one sample's contact sheet from its tar members (name after the key -> bytes).

    Item samples (``json`` + ``F.jpg``) give one row labelled ``item ID: title``; train samples
    (``json`` + ``INDEX.F.jpg``) one row per item of the window, labelled with the item ID.
    """
    document = json.loads(members[METADATA_FIELD]) if METADATA_FIELD in members else {}
    frames = {name: data for name, data in members.items() if is_frame_member(name)}
    if "item_ids" in document:  # a user's train sample
        labels = dict(zip(document["item_indices"], document["item_ids"], strict=True))
        by_item: dict[int, list[tuple[int, bytes]]] = {}
        for name, data in frames.items():
            index, frame = train_frame_of(name)
            by_item.setdefault(index, []).append((frame, data))
        return [
            (f"item {labels.get(index, index)}", [d for _, d in sorted(by_item[index])])
            for index in sorted(by_item)
        ]
    title = document.get("title")
    label = f"item {document.get('item_id', '?')}" + (f": {title}" if title else "")
    ordered = sorted(frames.items(), key=lambda kv: frame_number(kv[0], ITEM_FRAME_PREFIX))
    return [(label, [data for _, data in ordered])]
