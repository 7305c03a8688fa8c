"""The reviewer's report for a scan (``flexguard scan --report report.html``).

One self-contained HTML file (thumbnails inline as data: URIs, no script or font from anywhere) that a
reviewer opens offline or receives by mail: a summary on top, then the flagged photos by falling
risk with their decision, per-category bars in Bahasa Indonesia or English and the evidence boxes
drawn on the thumbnail, filters by decision and category, and the files that could not be scored.

Its size stays bounded however big the scan: thumbnails only for the highest-risk flagged photos (up
to ``MAX_FLAGGED``) and a small sample of allowed ones so the reviewer can see what passed, chosen by
content hash so it is stable and unbiased. The rows are read back from the output file in one pass
holding only what is shown. A thumbnail is made from the file as it is now and only if its hash still
matches the row, so a box is never drawn on a photo that changed since it was scored.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from PIL import Image

from flexguard.inference.video import frame_picture
from flexguard.models.preprocessing import PreprocessSpec, load_image, open_image
from flexguard.models.vocabulary import DECISION_WORDS, DECISIONS, FLAGGED

from .rows import ModelIdentity
from .summary import ScanSummary
from .walk import EXCLUDED, HIDDEN, NOT_IMAGE, NOT_REGULAR, REVISITED, UNREADABLE_FOLDER

MAX_FLAGGED = 1000
ALLOWED_SAMPLE = 48
MAX_ERRORS = 500
THUMBNAIL_PX = 240
THUMBNAIL_JPEG_QUALITY = 75
SCORE_DECIMALS = 4
PERCENT = 100
TEMPLATE = "templates/scan_report.html"

# Every piece of text the reviewer reads, in Bahasa Indonesia and English.
TEXT = {
    "heading": ("Laporan pemindaian foto", "Photo scan report"),
    **{decision.value: (words.id, words.en) for decision, words in DECISION_WORDS.items()},
    "risk": ("risiko", "risk"),
    "summary": ("Ringkasan", "Summary"),
    "files": ("Berkas di hasil pemindaian", "Files in the scan output"),
    "errors": ("Berkas yang tidak dapat dinilai", "Files that could not be scored"),
    "skipped": ("Dilewati", "Skipped"),
    "model": ("Model", "Model"),
    "folders": ("Folder", "Folders"),
    "output": ("Berkas hasil", "Output file"),
    "generated": ("Dibuat", "Generated"),
    "decision": ("Keputusan", "Decision"),
    "category": ("Kategori", "Category"),
    "all_categories": ("Semua kategori", "All categories"),
    "code": ("Kode", "Code"),
    "message": ("Pesan", "Message"),
    "path": ("Berkas", "File"),
    "count": ("Jumlah", "Count"),
    "none": ("tidak ada", "none"),
    "changed": ("berkas berubah sejak dipindai", "file changed since the scan"),
    "unreadable": ("berkas tidak dapat dibaca lagi", "file can no longer be read"),
    "shown_flagged": ("Ditampilkan {shown} foto berisiko tertinggi dari {total} yang ditandai.",
                      "Showing the {shown} highest-risk of {total} flagged photos."),
    "shown_sample": ("Ditambah contoh {shown} dari {total} foto yang diizinkan, untuk pemeriksaan.",
                     "Plus a sample of {shown} of {total} allowed photos, as a check."),
    "video": ("Video {duration} dtk; bingkai terburuk pada {worst} dtk.", "Video {duration} s; worst frame at {worst} s."),
    "flagged_at": ("Ditandai pada {times} dtk.", "Flagged at {times} s."),
    "more_errors": ("{more} berkas lagi tercantum di berkas hasil.", "{more} more are listed in the output file."),
    HIDDEN: ("tersembunyi", HIDDEN),
    NOT_IMAGE: ("bukan foto atau video", NOT_IMAGE),
    EXCLUDED: ("dikecualikan oleh --include/--exclude", EXCLUDED),
    NOT_REGULAR: ("bukan berkas biasa", NOT_REGULAR),
    REVISITED: ("folder yang dicapai lagi lewat tautan", REVISITED),
    UNREADABLE_FOLDER: ("folder yang tidak dapat dibaca", UNREADABLE_FOLDER),
}


def _text(key: str, **values: Any) -> str:
    indonesian, english = (html.escape(t.format(**values)) for t in TEXT[key])
    return f'<span class="l-id">{indonesian}</span><span class="l-en">{english}</span>'


def _category_label(category: Any) -> str:
    return f'<span class="l-id">{html.escape(category.name_id)}</span><span class="l-en">{html.escape(category.name_en)}</span>'


class _Smallest:
    """The ``limit`` rows with the smallest keys from a stream, holding at most twice that many."""

    def __init__(self, limit: int, key: Callable[[dict[str, Any]], Any]):
        self.limit, self.key = limit, key
        self.items: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.count += 1
        self.items.append(row)
        if len(self.items) >= 2 * self.limit:
            self._prune()

    def _prune(self) -> None:
        self.items.sort(key=self.key)
        del self.items[self.limit:]

    def result(self) -> list[dict[str, Any]]:
        self._prune()
        return self.items


def _thumbnail(row: dict[str, Any]) -> tuple[str | None, str]:
    """A data: URI of the photo at thumbnail size, or ``None`` and the key of the reason why not."""
    try:
        data = Path(row["path"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            return None, "changed"
        if row.get("video_worst_time_s") is not None:
            # A video is shown by its worst frame, the one its evidence boxes were drawn on.
            image = frame_picture(data, row["video_worst_time_s"])
        else:
            with open_image(data) as opened:
                # The shared loader: EXIF orientation as the model saw it (so the boxes fit), JPEG draft decoding.
                image = load_image(opened, PreprocessSpec(size=THUMBNAIL_PX))
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    except (OSError, ValueError, Image.DecompressionBombError):  # ImageError (a video's) is a ValueError
        return None, "unreadable"
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}", ""


def _card(row: dict[str, Any], thumbnail: tuple[str | None, str], model: ModelIdentity) -> str:
    by_id = {c.id: c for c in model.categories}
    uri, reason = thumbnail
    flagged = {e["category"] for e in row["evidence"]}
    top = max(row["scores"], key=lambda cid: row["scores"][cid])
    if uri is None:
        picture = f'<div class="missing">{_text(reason)}</div>'
    else:
        boxes = []
        for evidence in row["evidence"]:
            left, top_edge, right, bottom = (PERCENT * v for v in evidence["box"])
            label = f'{_category_label(by_id[evidence["category"]])} {evidence["score"]:.{SCORE_DECIMALS}f}'
            boxes.append(f'<div class="box" data-category="{html.escape(evidence["category"])}" style="left:{left:.2f}%;'
                         f'top:{top_edge:.2f}%;width:{right - left:.2f}%;height:{bottom - top_edge:.2f}%"><span>{label}</span></div>')
        picture = f'<div class="photo"><img src="{uri}" alt="{html.escape(row["path"])}">{"".join(boxes)}</div>'
    bars = []
    for category in model.categories:
        score = row["scores"][category.id]
        state = ' class="flagged"' if category.id in flagged else ""
        bars.append(f'<li{state}><span class="name">{_category_label(category)}</span>'
                    f'<span class="bar"><span style="width:{PERCENT * score:.1f}%"></span></span>'
                    f'<span class="value">{score:.{SCORE_DECIMALS}f}</span></li>')
    decision = row["decision"]
    # A photo is listed under each category it was flagged for, and under its top category.
    categories = " ".join(sorted(flagged | {top}))
    return (f'<article class="card {decision}" data-decision="{decision}" data-categories="{html.escape(categories)}" '
            f'data-risk="{row["risk"]}">{picture}'
            f'<div><span class="decision {decision}">{_text(decision)}</span> {_text("risk")} {row["risk"]:.{SCORE_DECIMALS}f}</div>'
            f'{_video_line(row)}<p class="path">{html.escape(row["path"])}</p><ul class="bars">{"".join(bars)}</ul></article>')


def _video_line(row: dict[str, Any]) -> str:
    """For a video: its length, the worst frame's time and when it was flagged."""
    if row.get("video_worst_time_s") is None:
        return ""
    flagged = ", ".join(f"{t:g}" for t in row["video_flagged_times"] or [])
    line = _text("video", duration=f"{row['video_duration_s']:g}", worst=f"{row['video_worst_time_s']:g}")
    if flagged:
        line += " " + _text("flagged_at", times=flagged)
    return f'<p class="video">{line}</p>'


def _counts_table(counter: Counter, heading: str, order: Sequence[str] | None = None, labelled: bool = False) -> str:
    keys = [k for k in (order if order is not None else sorted(counter)) if counter[k]]
    if not keys:
        return f"<h3>{_text(heading)}</h3><p>{_text('none')}</p>"
    rows = "".join(f'<tr><td>{_text(k) if labelled else html.escape(k)}</td><td class="n">{counter[k]}</td></tr>' for k in keys)
    return f'<h3>{_text(heading)}</h3><table><tbody>{rows}</tbody></table>'


def _summary(summary: ScanSummary, model: ModelIdentity, roots: Sequence[str], notes: Sequence[str]) -> str:
    generated = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    facts = (
        ("output", f"{summary.out} ({summary.rows})"),
        ("model", model.describe()),
        ("folders", " ".join(roots)),
        ("generated", generated),
    )
    rows = "".join(f"<tr><th>{_text(key)}</th><td>{html.escape(value)}</td></tr>" for key, value in facts)
    return (f'<section id="summary"><h2>{_text("summary")}</h2><table><tbody>{rows}</tbody></table>'
            + '<div class="counts">'
            + "".join(f"<div>{table}</div>" for table in (
                _counts_table(summary.decisions, "decision", DECISIONS, labelled=True),
                _counts_table(summary.errors, "errors"),
                _counts_table(summary.skipped, "skipped", labelled=True),
            ))
            + "</div>"
            + "".join(f'<p class="note">{note}</p>' for note in notes)
            + "</section>")


def _filters(model: ModelIdentity) -> str:
    boxes = "".join(f'<label><input type="checkbox" name="decision" value="{d}" checked> {_text(d)}</label> ' for d in reversed(DECISIONS))
    options = "".join(f'<option value="{html.escape(c.id)}">{html.escape(c.name_id)} / {html.escape(c.name_en)}</option>' for c in model.categories)
    return (f'<span>{_text("decision")}: {boxes}</span>'
            f'<label>{_text("category")}: <select id="category"><option value="">{html.escape(" / ".join(TEXT["all_categories"]))}</option>'
            f"{options}</select></label>")


def _errors(errors: _Smallest) -> str:
    shown = errors.result()
    if not shown:
        return ""
    rows = "".join(f"<tr><td class=\"path\">{html.escape(r['path'])}</td><td>{html.escape(r['error_code'])}</td>"
                   f"<td>{html.escape(r['error_message'] or '')}</td></tr>" for r in shown)
    more = f'<p class="note">{_text("more_errors", more=errors.count - len(shown))}</p>' if errors.count > len(shown) else ""
    header = "".join(f"<th>{_text(key)}</th>" for key in ("path", "code", "message"))
    return f'<section id="errors"><h2>{_text("errors")}</h2><table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>{more}</section>'


def write_report(path: Path, rows: Iterable[dict[str, Any]], model: ModelIdentity, summary: ScanSummary, roots: Sequence[str]) -> None:
    """Write the HTML report for the rows of a finished scan."""
    flagged = _Smallest(MAX_FLAGGED, lambda r: (-r["risk"], r["path"]))
    # Ordering by content hash picks an unbiased sample that is the same every time the report is made.
    allowed = _Smallest(ALLOWED_SAMPLE, lambda r: (r["sha256"], r["path"]))
    errors = _Smallest(MAX_ERRORS, lambda r: r["path"])
    for row in rows:
        if not row["ok"]:
            errors.add(row)
        elif row["decision"] in FLAGGED:
            flagged.add(row)
        else:
            allowed.add(row)
    shown = flagged.result() + sorted(allowed.result(), key=lambda r: (-r["risk"], r["path"]))
    # Reading and shrinking the photos is the slow part; Pillow releases the GIL while it decodes.
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        thumbnails = list(pool.map(_thumbnail, shown))
    notes = [_text("shown_flagged", shown=len(flagged.items), total=flagged.count),
             _text("shown_sample", shown=len(allowed.items), total=allowed.count)]
    slots = {
        "title": html.escape(f"flexguard: {TEXT['heading'][0]} / {TEXT['heading'][1]}"),
        "heading": f"flexguard: {_text('heading')}",
        "summary": _summary(summary, model, roots, notes),
        "filters": _filters(model),
        "cards": "\n".join(_card(row, thumbnail, model) for row, thumbnail in zip(shown, thumbnails)),
        "errors": _errors(errors),
    }
    page = files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    for name, value in slots.items():
        page = page.replace("{{" + name + "}}", value)
    # Written beside the target and renamed, so an interrupted run never leaves half a report.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, path)
