"""The audit trail as files for inspectors: JSON Lines (one event per line) or CSV (for spreadsheets).

Both the admin route (``GET /v1/admin/audit``) and ``flexguard admin audit`` stream the store's events
through these, so an export reads the same whichever way it was made.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from .records import AuditRecord
from .schemas import AuditEventOut

AUDIT_COLUMNS = ("id", "at", "action", "actor", "unit", "submission_id", "details")
FORMATS = ("jsonl", "csv")


def audit_jsonl(events: Iterable[AuditRecord]) -> Iterator[str]:
    for event in events:
        yield AuditEventOut.of(event).model_dump_json() + "\n"


def audit_csv(events: Iterable[AuditRecord]) -> Iterator[str]:
    """One event per row, its details as a JSON cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(AUDIT_COLUMNS)
    for event in events:
        row = AuditEventOut.of(event).model_dump(mode="json")
        writer.writerow([*(row[column] for column in AUDIT_COLUMNS[:-1]), json.dumps(row["details"], ensure_ascii=False)])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def audit_lines(events: Iterable[AuditRecord], format: str) -> Iterator[str]:
    return audit_csv(events) if format == "csv" else audit_jsonl(events)
