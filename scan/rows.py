"""One scan row per file, built the same way whichever engine scored it.

``flexguard scan`` can score through the local engine, Ray actors or a running service; all three build
their rows with the functions here, so the output does not depend on where the model ran. A row is a
plain dict with fixed keys (``None`` where a field does not apply): one JSON object per line, or CSV
columns via ``to_csv_record``. Reading files for scoring lives here too, so the size, hash and error
codes of a file are computed by one piece of code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from flexguard.models.metadata import ModelInfo
from flexguard.models.vocabulary import ErrorCode

from flexguard.inference.engine import Engine, ImageError, ImageScore, Prepared
from flexguard.inference.video import PreparedVideo

# Every row has these keys, in this order (CSV columns replace "scores" by one column per category).
ROW_KEYS = (
    "path", "size", "sha256", "ok", "risk", "decision", "scores", "evidence",
    "width", "height", "format", "model_version", "model_weights_sha256", "error_code", "error_message",
    # Videos only (None for a photo): its length, its worst frame's time and number, and the times of its
    # frames at review or block.
    "video_duration_s", "video_worst_time_s", "video_worst_frame", "video_flagged_times",
)
# No photo or phone video is this big; refusing it keeps a stray disk image from being read into memory
# (it still gets a row, with its size and hash). Videos have their own, lower limit in the engine.
MAX_FILE_BYTES = 256 * 1024 * 1024
SCORE_COLUMN_PREFIX = "score_"


class ScanError(ValueError):
    """A problem with what the user asked the scan to do, reported as one line."""


@dataclass(frozen=True)
class CategoryLabel:
    """What a report or a CSV header needs to know about one model output."""

    id: str
    name_en: str
    name_id: str


@dataclass(frozen=True)
class ModelIdentity:
    """The model that scored a scan, as far as a local file or a remote service can tell us."""

    name: str
    version: str
    weights_sha256: str
    categories: tuple[CategoryLabel, ...]

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)

    @classmethod
    def from_info(cls, info: ModelInfo) -> "ModelIdentity":
        return cls(info.name, info.version, info.weights_sha256,
                   tuple(CategoryLabel(c.id, c.name_en, c.name_id) for c in info.categories))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "weights_sha256": self.weights_sha256,
                "categories": [asdict(c) for c in self.categories]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelIdentity":
        # A sidecar from before weights were recorded has none: "" never equals a real digest, so
        # resuming such a scan is refused rather than assumed to be the same model.
        return cls(str(data["name"]), str(data["version"]), str(data.get("weights_sha256", "")),
                   tuple(CategoryLabel(**c) for c in data["categories"]))

    def describe(self) -> str:
        """How a person tells two models apart: name, version and the start of the weights' digest."""
        return f"{self.name} {self.version} (weights {self.weights_sha256[:12] or 'not recorded'})"


@dataclass(frozen=True)
class FileFacts:
    size: int
    sha256: str


@dataclass(frozen=True)
class Loaded:
    """A file read and decoded for scoring, or the reason it cannot be scored."""

    path: str
    facts: FileFacts | None
    outcome: Prepared | ImageError


class FileError(ImageError):
    """A file that fails before decoding starts; keeps its size and hash where they could be taken."""

    def __init__(self, code: str, message: str, facts: FileFacts | None = None):
        super().__init__(code, message)
        self.facts = facts


def _sha256_of_file(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_file(path: str) -> tuple[bytes, FileFacts]:
    """The bytes of a photo with their size and hash; ``FileError`` if there is nothing to decode."""
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE_BYTES:
            message = f"{size} bytes is over the limit of {MAX_FILE_BYTES} bytes for a photo"
            raise FileError(ErrorCode.TOO_LARGE, message, FileFacts(size, _sha256_of_file(path)))
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise FileError(ErrorCode.READ_FAILED, f"the file could not be read: {error.strerror or error}") from None
    facts = FileFacts(len(data), hashlib.sha256(data).hexdigest())
    if not data:
        # Pillow would call it an unknown format; a zero-byte "photo" is usually a failed copy, so say so.
        raise FileError(ErrorCode.EMPTY_FILE, "the file is empty", facts)
    return data, facts


def load(engine: Engine, path: str) -> Loaded:
    """Read and decode one file through the engine (the scanner's only decoding path)."""
    try:
        data, facts = read_file(path)
    except FileError as error:
        return Loaded(path, error.facts, error)
    try:
        return Loaded(path, facts, engine.prepare(data))
    except ImageError as error:
        return Loaded(path, facts, error)
    except Exception as error:  # noqa: BLE001
        # Malformed files can make Pillow's decoders raise almost anything (struct.error, IndexError...);
        # in a batch of a million files that is one bad file, not a reason to stop the scan.
        return Loaded(path, facts, ImageError(ErrorCode.DECODE_FAILED, f"the image could not be decoded: {type(error).__name__}: {error}"))


def score_loaded(engine: Engine, loaded: Sequence[Loaded]) -> list[dict[str, Any]]:
    """Rows for ``loaded``, in order: the decoded photos go through the model in one batch."""
    model = ModelIdentity.from_info(engine.info)
    scores = iter(engine.score_prepared([item.outcome for item in loaded if isinstance(item.outcome, (Prepared, PreparedVideo))]))
    rows = []
    for item in loaded:
        if isinstance(item.outcome, ImageError):
            rows.append(error_row(item.path, item.facts, item.outcome.code, item.outcome.message, model))
        else:
            rows.append(scored_row(item.path, item.facts, next(scores), model))
    return rows


def _row(path: str, facts: FileFacts | None, model: ModelIdentity, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(path=path, model_version=model.version, model_weights_sha256=model.weights_sha256, **fields)
    if facts is not None:
        row.update(size=facts.size, sha256=facts.sha256)
    return row


def scored_row(path: str, facts: FileFacts | None, score: ImageScore, model: ModelIdentity) -> dict[str, Any]:
    return _row(
        path, facts, model,
        ok=True, risk=score.risk, decision=score.decision, scores=dict(score.scores),
        evidence=[{"category": e.category, "score": e.score, "box": list(e.box)} for e in score.evidence],
        width=score.width, height=score.height, format=score.format,
        **_video_fields(score),
    )


def _video_fields(score: ImageScore) -> dict[str, Any]:
    video = score.video
    if video is None:
        return {}
    return {"video_duration_s": video.duration_s, "video_worst_time_s": video.worst.time_s,
            "video_worst_frame": video.worst.number, "video_flagged_times": [f.time_s for f in video.flagged]}


def error_row(path: str, facts: FileFacts | None, code: str, message: str, model: ModelIdentity) -> dict[str, Any]:
    return _row(path, facts, model, ok=False, error_code=code, error_message=message)


def service_row(path: str, facts: FileFacts, result: dict[str, Any], model: ModelIdentity) -> dict[str, Any]:
    """A row from one entry of the service's ``/v1/score`` response (same fields as ``scored_row``)."""
    if not result["ok"]:
        return error_row(path, facts, result["error"]["code"], result["error"]["message"], model)
    image = result["image"]
    return _row(
        path, facts, model,
        ok=True, risk=result["risk"], decision=result["decision"],
        scores={entry["id"]: entry["score"] for entry in result["categories"]},
        evidence=[{"category": e["category"], "score": e["score"], "box": list(e["box"])} for e in result["evidence"]],
        width=image["width"], height=image["height"], format=image["format"],
        **({} if not result.get("video") else {
            "video_duration_s": result["video"]["duration_s"], "video_worst_time_s": result["video"]["worst_frame"]["time_s"],
            "video_worst_frame": result["video"]["worst_frame"]["index"],
            "video_flagged_times": [f["time_s"] for f in result["video"]["flagged_frames"]]}),
    )


# --- CSV: the same row, flat. ---


def csv_header(category_ids: Sequence[str]) -> list[str]:
    columns: list[str] = []
    for key in ROW_KEYS:
        if key == "scores":
            columns.extend(SCORE_COLUMN_PREFIX + cid for cid in category_ids)
        else:
            columns.append(key)
    return columns


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv_record(row: dict[str, Any], category_ids: Sequence[str]) -> list[str]:
    cells = []
    for key in ROW_KEYS:
        if key == "scores":
            scores = row["scores"] or {}
            cells.extend(_csv_cell(scores.get(cid)) for cid in category_ids)
        elif key in ("evidence", "video_flagged_times"):
            cells.append("" if row[key] is None else json.dumps(row[key], separators=(",", ":")))
        else:
            cells.append(_csv_cell(row[key]))
    return cells


def from_csv_record(record: Sequence[str], category_ids: Sequence[str]) -> dict[str, Any]:
    """The row a CSV record was written from (the inverse of ``to_csv_record``)."""
    cells = dict(zip(csv_header(category_ids), record))
    ok = cells["ok"] == "true"

    def number(key: str, kind: type) -> Any:
        return kind(cells[key]) if cells[key] else None

    # An empty cell is None, except in text fields that may be legitimately empty for their kind of row.
    return {
        "path": cells["path"],
        "size": number("size", int),
        "sha256": cells["sha256"] or None,
        "ok": ok,
        "risk": number("risk", float),
        "decision": cells["decision"] or None,
        "scores": {cid: float(cells[SCORE_COLUMN_PREFIX + cid]) for cid in category_ids} if ok else None,
        "evidence": json.loads(cells["evidence"]) if ok else None,
        "width": number("width", int),
        "height": number("height", int),
        "format": cells["format"] if ok else None,
        "model_version": cells["model_version"],
        "model_weights_sha256": cells["model_weights_sha256"],
        "error_code": None if ok else cells["error_code"],
        "error_message": None if ok else cells["error_message"],
        "video_duration_s": number("video_duration_s", float),
        "video_worst_time_s": number("video_worst_time_s", float),
        "video_worst_frame": number("video_worst_frame", int),
        "video_flagged_times": json.loads(cells["video_flagged_times"]) if cells.get("video_flagged_times") else None,
    }
