"""The words flexguard says to people, once: decisions, error codes, and their English and Indonesian.

The API, the metrics, the scanner's rows and report, the try-it and reviewer pages and training's
reports all speak of the same three decisions and the same error codes. Each is defined here, with
its order and its words in both languages, and everything else takes it from here: the pages get the
table as ``/static/words.js`` (``words_script``), the scan report reads ``DECISION_WORDS``. The
categories' names live with the categories (``taxonomy``) and are part of the same table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .taxonomy import CATEGORIES


class Decision(StrEnum):
    """What to do with a photo, in order of severity."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


# Least to most severe: a report sorts by it, "review or worse" is a slice of it.
DECISIONS: tuple[Decision, ...] = tuple(Decision)
# The decisions a person has to look at.
FLAGGED: tuple[Decision, ...] = (Decision.REVIEW, Decision.BLOCK)


def at_or_over(decision: str) -> tuple[Decision, ...]:
    """``decision`` and every more severe one (``at_or_over("review") == (REVIEW, BLOCK)``)."""
    return DECISIONS[DECISIONS.index(Decision(decision)):]


class ErrorCode(StrEnum):
    """The stable codes clients branch on: per photo (in a result or a scan row) or per request."""

    # A photo that cannot be scored.
    UNSUPPORTED_FORMAT = "unsupported_format"
    DECODE_FAILED = "decode_failed"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"  # a video over the longest duration
    # A file the scanner could not hand to the engine.
    READ_FAILED = "read_failed"
    EMPTY_FILE = "empty_file"
    REJECTED_BY_SERVER = "rejected_by_server"
    # A whole request.
    TOO_MANY_FILES = "too_many_files"
    NO_PHOTOS = "no_photos"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_PARAMETERS = "invalid_parameters"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    UNREADABLE_PHOTO = "unreadable_photo"
    REQUEST_TIMEOUT = "request_timeout"
    OVERLOADED = "overloaded"
    DATABASE_UNAVAILABLE = "database_unavailable"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Words:
    en: str
    id: str

    def to_dict(self) -> dict[str, str]:
        return {"en": self.en, "id": self.id}


DECISION_WORDS: dict[Decision, Words] = {
    Decision.ALLOW: Words("Allow", "Aman"),
    Decision.REVIEW: Words("Needs review", "Perlu ditinjau"),
    Decision.BLOCK: Words("Do not post", "Jangan diunggah"),
}

# What a person reads for each code: short, in both languages; the service's own message (in English,
# with the specifics) is shown beside it as a detail.
ERROR_WORDS: dict[ErrorCode, Words] = {
    ErrorCode.UNSUPPORTED_FORMAT: Words("Not a photo format flexguard can read.",
                                        "Bukan format foto yang dapat dibaca flexguard."),
    ErrorCode.DECODE_FAILED: Words("The photo is damaged or cut short.", "Foto rusak atau terpotong."),
    ErrorCode.TOO_MANY_PIXELS: Words("The photo has too many pixels.", "Foto memiliki terlalu banyak piksel."),
    ErrorCode.TOO_LARGE: Words("The file is too large.", "Berkas terlalu besar."),
    ErrorCode.TOO_LONG: Words("The video is too long.", "Video terlalu panjang."),
    ErrorCode.READ_FAILED: Words("The file could not be read.", "Berkas tidak dapat dibaca."),
    ErrorCode.EMPTY_FILE: Words("The file is empty.", "Berkas kosong."),
    ErrorCode.REJECTED_BY_SERVER: Words("The service refused the file.", "Layanan menolak berkas ini."),
    ErrorCode.TOO_MANY_FILES: Words("Too many photos in one request.", "Terlalu banyak foto dalam satu permintaan."),
    ErrorCode.NO_PHOTOS: Words("No photo was sent.", "Tidak ada foto yang dikirim."),
    ErrorCode.BAD_REQUEST: Words("The request could not be read.", "Permintaan tidak dapat dibaca."),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: Words("Send photos as a form upload or an image.",
                                            "Kirim foto sebagai unggahan formulir atau gambar."),
    ErrorCode.INVALID_PARAMETERS: Words("A value in the request is not valid.", "Ada nilai permintaan yang tidak sah."),
    ErrorCode.UNAUTHORIZED: Words("The key is missing or wrong.", "Kunci tidak ada atau salah."),
    ErrorCode.FORBIDDEN: Words("This key may not do that.", "Kunci ini tidak berhak melakukannya."),
    ErrorCode.CONFLICT: Words("Someone else changed this first.", "Sudah diubah lebih dulu oleh orang lain."),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: Words("This request key was used for another post.",
                                            "Kunci permintaan ini sudah dipakai untuk unggahan lain."),
    ErrorCode.UNREADABLE_PHOTO: Words("A photo of the post cannot be read.", "Ada foto unggahan yang tidak dapat dibaca."),
    ErrorCode.REQUEST_TIMEOUT: Words("The upload took too long.", "Unggahan terlalu lama."),
    ErrorCode.OVERLOADED: Words("The service is busy; try again shortly.", "Layanan sedang sibuk; coba lagi sebentar."),
    ErrorCode.DATABASE_UNAVAILABLE: Words("The review database cannot be reached; try again shortly.",
                                          "Basis data tinjauan tidak dapat dihubungi; coba lagi sebentar."),
    ErrorCode.RATE_LIMITED: Words("Too many requests from this key; wait a moment.",
                                  "Terlalu banyak permintaan dari kunci ini; tunggu sebentar."),
    ErrorCode.NOT_FOUND: Words("Not found.", "Tidak ditemukan."),
    ErrorCode.METHOD_NOT_ALLOWED: Words("That is not allowed here.", "Tidak diizinkan di sini."),
    ErrorCode.INTERNAL_ERROR: Words("The service failed; try again later.", "Layanan gagal; coba lagi nanti."),
}


def words_table() -> dict[str, Any]:
    """The whole table as JSON-ready data: ``{"decisions", "decision_order", "categories", "errors"}``."""
    return {
        "decision_order": [d.value for d in DECISIONS],
        "decisions": {d.value: w.to_dict() for d, w in DECISION_WORDS.items()},
        "categories": {c.id: {"en": c.name_en, "id": c.name_id} for c in CATEGORIES},
        "errors": {code.value: w.to_dict() for code, w in ERROR_WORDS.items()},
    }


def words_script() -> str:
    """The table as a script for the pages (``window.flexguardWords``): no second copy in JavaScript."""
    return f"window.flexguardWords = {json.dumps(words_table(), ensure_ascii=False, sort_keys=True)};\n"
