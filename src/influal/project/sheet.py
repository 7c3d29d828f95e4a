"""contact-sheet.png: a batch's thumbnails in rank order, each with its rank, score, split and prediction."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

from ..api import LabelSchema
from ..core.io import atomic_write_bytes
from .exports import BatchItem

THUMB = 112
CAPTION = 30
COLUMNS = 10
MAX_ITEMS = 200


def contact_sheet(root: Path, items: Sequence[BatchItem], schema: LabelSchema, path: Path) -> None:
    """Draw up to 200 items (a note says how many more the batch holds) and write the PNG atomically."""
    from PIL import Image, ImageDraw, ImageFont

    shown = list(items[:MAX_ITEMS])
    cols = max(1, min(COLUMNS, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    footer = 18 if len(items) > len(shown) else 0
    sheet = Image.new("RGB", (cols * THUMB, rows * (THUMB + CAPTION) + footer), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, item in enumerate(shown):
        x0, y0 = (k % cols) * THUMB, (k // cols) * (THUMB + CAPTION)
        with Image.open(root / item.record.path) as img:
            img = img.convert("RGB")
            scale = min((THUMB - 4) / img.width, (THUMB - 4) / img.height)
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            thumb = img.resize(size, Image.Resampling.BILINEAR)
        ox, oy = x0 + (THUMB - size[0]) // 2, y0 + (THUMB - size[1]) // 2
        sheet.paste(thumb, (ox, oy))
        if item.prediction is not None:
            for (bx, by, bw, bh), _ in schema.drawn_boxes(item.prediction):
                draw.rectangle([ox + bx * scale, oy + by * scale, ox + (bx + bw) * scale, oy + (by + bh) * scale],
                               outline=(230, 60, 30), width=1)
        if item.split == "val":
            draw.rectangle([x0 + 1, y0 + 1, x0 + THUMB - 2, y0 + THUMB - 2], outline=(40, 110, 220), width=2)
        score = "" if item.score is None or not math.isfinite(item.score) else f" {item.score:.3g}"
        first = f"#{item.rank}{score}" + (" val" if item.split == "val" else "")
        second = schema.describe(item.prediction) if item.prediction is not None else f"id {item.record.id}"
        draw.text((x0 + 3, y0 + THUMB + 1), first, fill="black", font=font)
        draw.text((x0 + 3, y0 + THUMB + 14), second[:20], fill=(90, 90, 90), font=font)
    if footer:
        draw.text((4, rows * (THUMB + CAPTION) + 3), f"the first {len(shown)} of {len(items)} images; batch.csv "
                  "lists all", fill="black", font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
