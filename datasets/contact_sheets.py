"""Contact sheets: every photo of a batch on numbered tiles, so a person can look at all of them.

Labels are checked by eye (datasets/LABELLING.md), and mistakes hide in long lists: one sheet run per
label, and with ``model`` given the tiles are sorted by that model's risk, so an "ordinary" photo the
model calls luxury (or the other way round) sits at the start or the end of its run, where it stands out.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .near_duplicates import open_upright

# 6 x 5 tiles of 200 px, numbered: legible on a laptop screen, 30 photos to a sheet.
SHEET_COLUMNS, SHEET_ROWS, TILE_SIDE = 6, 5, 200
TILE_MARGIN = 4
LABEL_HEIGHT = 22
FONT_SIZE = 18
CAPTION_CHARS = 22
# Photos per model call when sorting by risk: one call's fixed cost shared, memory still small.
SCORE_BATCH = 16


def draw_sheet(tiles: Sequence[tuple[Image.Image, str]], out: Path) -> None:
    """Draw up to SHEET_COLUMNS x SHEET_ROWS tiles, each captioned, into one PNG (viewers show PNG)."""
    sheet = Image.new("RGB", (SHEET_COLUMNS * TILE_SIDE, SHEET_ROWS * (TILE_SIDE + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    for position, (image, caption) in enumerate(tiles):
        column, row = position % SHEET_COLUMNS, position // SHEET_COLUMNS
        thumb = image.copy()
        thumb.thumbnail((TILE_SIDE - TILE_MARGIN, TILE_SIDE - TILE_MARGIN))
        left, top = column * TILE_SIDE, row * (TILE_SIDE + LABEL_HEIGHT)
        sheet.paste(thumb, (left + (TILE_SIDE - thumb.width) // 2, top + (TILE_SIDE - thumb.height) // 2))
        draw.text((left + TILE_MARGIN, top + TILE_SIDE), caption, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def draw_sheets(tiles: list[tuple[Image.Image, str]], out_dir: Path, prefix: str) -> list[Path]:
    """As many sheets as the tiles need: ``<prefix>000.png``, ``<prefix>001.png``, ..."""
    per_sheet = SHEET_COLUMNS * SHEET_ROWS
    paths = []
    for start in range(0, len(tiles), per_sheet):
        path = out_dir / f"{prefix}{start // per_sheet:03d}.png"
        draw_sheet(tiles[start:start + per_sheet], path)
        paths.append(path)
    return paths


def batch_sheets(manifest: Path, out_dir: Path, model: Path | None = None) -> list[Path]:
    """Sheets of a batch's photos, one run per label (hard negatives apart), sorted by ``model``'s risk."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    name = manifest.parent.name
    for old in out_dir.glob(f"{name}-*.png"):
        old.unlink()
    risks = _risks(manifest.parent, rows, model) if model else {}
    paths: list[Path] = []
    for category, hard in sorted({(row["category"], row["hard_negative"]) for row in rows}):
        chosen = [row for row in rows if (row["category"], row["hard_negative"]) == (category, hard)]
        chosen.sort(key=lambda row: -risks.get(row["path"], 0.0))
        tiles = [(open_upright(manifest.parent / row["path"]), _caption(row, risks)) for row in chosen]
        prefix = f"{name}-{category.replace(';', '+')}{'-hard' if hard == '1' else ''}-"
        paths.extend(draw_sheets(tiles, out_dir, prefix))
    return paths


def _caption(row: dict[str, str], risks: dict[str, float]) -> str:
    stem = Path(row["path"]).name.split("__")[-1]
    if row["path"] in risks:
        return f"{risks[row['path']]:.2f} {stem}"[:CAPTION_CHARS]
    return stem[:CAPTION_CHARS]


def _risks(folder: Path, rows: list[dict[str, str]], model: Path) -> dict[str, float]:
    """Each photo's risk under ``model``, through the serving engine (so it is the risk users get)."""
    from flexguard.inference.engine import Engine, ImageError

    engine = Engine(model)
    risks = {}
    for start in range(0, len(rows), SCORE_BATCH):
        chunk = rows[start:start + SCORE_BATCH]
        for row, result in zip(chunk, engine.score([folder / row["path"] for row in chunk])):
            risks[row["path"]] = -1.0 if isinstance(result, ImageError) else result.risk
    return risks
