"""What one scan did, for the command to print and the report to show.

Its own module so that the runner (which makes it) and the report (which shows it) both import it
and neither imports the other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterable

from flexguard.models.vocabulary import DECISIONS, at_or_over


@dataclass
class ScanSummary:
    out: Path
    rows: int = 0
    previous: int = 0
    scored: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    decisions: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    unreadable_folders: list[str] = field(default_factory=list)
    report: Path | None = None

    @property
    def files_per_s(self) -> float:
        return (self.scored + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def at_or_over(self, decision: str) -> int:
        """Rows in the whole output (earlier runs included) whose decision is ``decision`` or worse."""
        return sum(self.decisions[d] for d in at_or_over(decision))

    def lines(self) -> list[str]:
        def counts(counter: Counter, order: Iterable[str] | None = None) -> str:
            keys = list(order) if order is not None else sorted(counter)
            return ", ".join(f"{key} {counter[key]}" for key in keys if counter[key]) or "none"

        this_run = self.scored + self.failed
        lines = [
            f"scanned {this_run} files ({self.scored} scored, {self.failed} errors) in "
            f"{timedelta(seconds=round(self.elapsed_s))}, {self.files_per_s:.1f} files/s",
            f"{self.out}: {self.rows} rows" + (f" ({self.previous} from earlier runs)" if self.previous else ""),
            f"decisions: {counts(self.decisions, DECISIONS)}",
            f"errors: {counts(self.errors)}",
            f"skipped: {counts(self.skipped)}",
        ]
        lines += [f"could not read folder: {folder}" for folder in self.unreadable_folders]
        if self.report is not None:
            lines.append(f"report: {self.report}")
        return lines
