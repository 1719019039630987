"""A PNG contact sheet of ranked search results, drawn with Pillow alone (no matplotlib needed).

One row per query: the query (text, or the image itself), then its top results left to right, each
labelled with its rank and Hamming distance. Image results show the image; text results show the text.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from cmhash.runtime.io import atomic_write

TILE = 160
LABEL = 40
PAD = 8


def _thumb(path: str) -> Image.Image:
    from cmhash.runtime.preprocess import load_rgb

    img = load_rgb(path)
    img.thumbnail((TILE, TILE))
    return img


def _text_tile(text: str, font: Any) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE), (245, 245, 245))
    ImageDraw.Draw(tile).multiline_text((6, 6), "\n".join(textwrap.wrap(text, 24)[:9]), fill=(20, 20, 20),
                                        font=font, spacing=3)
    return tile


def draw(queries: Sequence[Any], path: str | os.PathLike) -> Path:
    """Write the sheet for `queries` (objects with .kind, .query and .hits of (item, distance)) to `path`."""
    font = ImageFont.load_default()
    columns = 1 + max(len(q.hits) for q in queries)
    width, row_h = PAD + columns * (TILE + PAD), TILE + LABEL + PAD
    sheet = Image.new("RGB", (width, PAD + len(queries) * row_h), "white")
    pen = ImageDraw.Draw(sheet)
    for r, q in enumerate(queries):
        y = PAD + r * row_h
        image_query = q.kind.startswith("image")
        first = _thumb(q.query) if image_query else _text_tile(f'"{q.query}"', font)
        sheet.paste(first, (PAD, y))
        kind = q.kind.replace("→", " -> ")  # Pillow's built-in font has no arrow glyph
        pen.text((PAD, y + TILE + 4), f"query ({kind})", fill=(180, 0, 0), font=font)
        for c, hit in enumerate(q.hits, start=1):
            x = PAD + c * (TILE + PAD)
            tile = _text_tile(hit.item, font) if image_query else _thumb(hit.item)
            sheet.paste(tile, (x, y))
            name = "" if image_query else Path(hit.item).name
            pen.text((x, y + TILE + 4), f"#{c}  distance {hit.distance}\n{name}", fill=(0, 0, 0), font=font)
    path = Path(path)
    with atomic_write(path) as fh:
        sheet.save(fh, format="PNG")
    return path
