"""Reviewer-labelled photos out to the data team as a training batch, each photo exactly once.

``flexguard admin export-training --out DIR`` (and ``POST /v1/admin/training-export``) writes the photos
that reviewers of consenting units labelled to ``DIR/images/<unit>/<submission>_<position>.<ext>`` and
lists them in ``DIR/manifest.csv``, in the manifest format ``flexguard train`` reads: the reviewer's
categories, or ``ordinary`` and ``hard_negative`` for a false alarm (the model took it for luxury); the
group keeps one unit's photos of one day together and the source is ``review:<unit>``; the provenance
columns say which submission, reviewer, decision time and model (with its scores) each photo comes from.

Exactly once, whatever moment the process dies at. Photos go out in chunks; for each chunk:
1. every photo file is written under its final name (a temporary file, fsynced, renamed);
2. the whole manifest (the rows already there and this chunk's) is written the same way;
3. then, in one database transaction, the chunk is marked exported, its bytes deleted, and audited.
A crash before 3 leaves the chunk in the database: the rerun (into the same DIR) writes the same files
and rows under the same names, so the manifest lists each photo once. After 3 the chunk is no longer
offered. Rerun an interrupted export with the same ``--out``.
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from flexguard.models.taxonomy import ORDINARY

from .store import Principal, ReviewStore, TrainingPhoto
from .tables import Verdict

MANIFEST_NAME = "manifest.csv"
IMAGES_DIR = "images"
# Photos per chunk: each chunk is one manifest rewrite and one transaction; 100 photos of a few MB each
# bound the memory an export holds at once.
CHUNK = 100
SOURCE_PREFIX = "review:"
LICENSE = "photo of the unit's own post, kept and exported with the unit's training consent"
COLUMNS = (
    "path", "category", "hard_negative", "group", "source_repo", "verdict", "submission_id", "position",
    "reviewer", "decided_at", "model_name", "model_version", "model_weights_sha256", "model_risk", "model_scores",
    "sha256", "license",
)
FALLBACK_SUFFIX = ".img"


@dataclass(frozen=True)
class ExportReport:
    photos: int  # exported by this run
    by_unit: dict[str, int]
    manifest: Path
    listed: int  # rows in the manifest now, earlier runs' included


def export_training(store: ReviewStore, actor: Principal, out_dir: Path, since: datetime | None = None,
                    unit: str | None = None, advance: Callable[[int], None] = lambda n: None) -> ExportReport:
    """Export every labelled photo not exported yet (of ``unit``, decided at or after ``since``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST_NAME
    rows = _read_rows(manifest)
    exported: Counter[str] = Counter()
    while photos := store.training_photos(actor, CHUNK, since, unit):
        for photo in photos:
            relative = f"{IMAGES_DIR}/{photo.unit}/{photo.submission_id}_{photo.position}{_suffix(photo.media_type)}"
            _write_durably(out_dir / relative, photo.data)
            rows[relative] = _row(relative, photo)
        _write_durably(manifest, _manifest_text(rows).encode("utf-8"))
        store.mark_exported(actor, photos, str(out_dir.resolve()))
        exported.update(photo.unit for photo in photos)
        advance(len(photos))
    return ExportReport(photos=sum(exported.values()), by_unit=dict(exported), manifest=manifest, listed=len(rows))


def _row(relative: str, photo: TrainingPhoto) -> dict[str, str]:
    false_alarm = photo.verdict == Verdict.FALSE_ALARM.value
    return {
        "path": relative,
        "category": ORDINARY if false_alarm else ";".join(photo.categories),
        "hard_negative": "1" if false_alarm else "0",  # the model took it for luxury: a look-alike
        "group": f"{SOURCE_PREFIX}{photo.unit}:{photo.decided_at:%Y-%m-%d}",
        "source_repo": f"{SOURCE_PREFIX}{photo.unit}",
        "verdict": photo.verdict,
        "submission_id": photo.submission_id,
        "position": str(photo.position),
        "reviewer": photo.reviewer,
        "decided_at": photo.decided_at.isoformat().replace("+00:00", "Z"),
        "model_name": photo.model_name,
        "model_version": photo.model_version,
        "model_weights_sha256": photo.model_weights_sha256 or "",
        "model_risk": f"{photo.risk:.4f}",
        "model_scores": json.dumps(photo.scores, sort_keys=True),
        "sha256": photo.sha256,
        "license": LICENSE,
    }


def _suffix(media_type: str) -> str:
    return {"image/jpeg": ".jpg"}.get(media_type) or mimetypes.guess_extension(media_type) or FALLBACK_SUFFIX


def _read_rows(manifest: Path) -> dict[str, dict[str, str]]:
    """The rows an earlier (perhaps interrupted) export into this folder wrote, by path."""
    if not manifest.exists():
        return {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def _manifest_text(rows: dict[str, dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[path] for path in sorted(rows))
    return buffer.getvalue()


def _write_durably(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all, and on the disk (not only in the page cache) on return."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself
    finally:
        os.close(folder)
