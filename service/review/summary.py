"""A unit at a glance: what its posts came to, week by week, and how well the model served it.

Computed from the facts the store hands over (``ReviewStore.summary_facts``), so the figures are plain
counts anyone can redo from the submissions or the audit trail:
- posts per ISO week (Monday, UTC) by outcome: cleared, pending, approved, rejected, expired;
- flagged photos per category (a photo counts once for each category it was flagged for);
- the median and 90th percentile of the time from submission to a reviewer's decision;
- per category, the false-alarm rate among the flags reviewers labelled: the share of labelled photos
  flagged for that category that the reviewer said do not show it (a false alarm, or "correct" with
  other categories).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flexguard.models.taxonomy import CATEGORY_IDS

from .store import PostFacts
from .tables import Status, Verdict

OUTCOMES = (Status.CLEARED, Status.PENDING, Status.APPROVED, Status.REJECTED, Status.EXPIRED)
DECIDED_BY_A_REVIEWER = (Status.APPROVED.value, Status.REJECTED.value)
DEFAULT_WEEKS = 12
MAX_WEEKS = 104
DAYS_PER_WEEK = 7
SECONDS_PER_HOUR = 3600.0
HIGH_PERCENTILE = 90


@dataclass(frozen=True)
class CategoryLabels:
    labelled: int  # labelled photos the model flagged for this category
    false_alarms: int  # of those, the ones the reviewer said do not show it

    @property
    def false_alarm_rate(self) -> float | None:
        return self.false_alarms / self.labelled if self.labelled else None


@dataclass(frozen=True)
class Summary:
    weeks: list[tuple[str, dict[str, int]]]  # (ISO week "2026-W48", posts by outcome), oldest first
    flagged: dict[str, int]  # photos flagged per category
    decision_hours: tuple[float | None, float | None]  # median, 90th percentile; None without decisions
    decisions: int
    labels: dict[str, CategoryLabels] = field(default_factory=dict)


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 UTC of ``moment``'s ISO week."""
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def week_name(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def percentile(values: list[float], percent: float) -> float | None:
    """The ``percent``-th percentile by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * percent / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(posts: list[PostFacts], first_week: datetime, n_weeks: int) -> Summary:
    """The summary of ``posts`` over ``n_weeks`` weeks from ``first_week`` (a Monday, as week_start gives)."""
    weeks = {week_name(first_week + timedelta(days=DAYS_PER_WEEK * i)): Counter() for i in range(n_weeks)}
    flagged: Counter[str] = Counter()
    hours: list[float] = []
    labelled: Counter[str] = Counter()
    false_alarms: Counter[str] = Counter()
    for post in posts:
        weeks.setdefault(week_name(post.created_at), Counter())[post.status] += 1
        if post.status in DECIDED_BY_A_REVIEWER and post.decided_at is not None:
            hours.append((post.decided_at - post.created_at).total_seconds() / SECONDS_PER_HOUR)
        for photo in post.photos:
            flagged.update(set(photo.flagged))
            if photo.verdict is None:
                continue
            for category in set(photo.flagged):
                labelled[category] += 1
                if photo.verdict == Verdict.FALSE_ALARM.value or category not in photo.shown:
                    false_alarms[category] += 1
    by_week = defaultdict(dict)
    for name, counts in weeks.items():
        by_week[name] = {outcome.value: counts.get(outcome.value, 0) for outcome in OUTCOMES}
    return Summary(
        weeks=sorted(by_week.items()),
        flagged={category: flagged.get(category, 0) for category in CATEGORY_IDS},
        decision_hours=(percentile(hours, 50), percentile(hours, HIGH_PERCENTILE)),
        decisions=len(hours),
        labels={category: CategoryLabels(labelled.get(category, 0), false_alarms.get(category, 0))
                for category in CATEGORY_IDS},
    )
