"""Which scores lead to review or block: the model's thresholds, adjusted per category.

A unit (OPD) may hold a category to thresholds of its own, or turn it off: a tourism office posts resorts
for a living, so for it ``luxury_travel`` never leads to review. A request to ``/v1/score`` may likewise
give per-category thresholds, the way cloud moderation APIs take a minimum confidence per label. A photo's
decision is the most severe one its categories give under the policy; its risk stays the model's highest
score, and only the categories at or above their own review threshold get evidence boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .metadata import Thresholds
from .taxonomy import CATEGORY_IDS
from .vocabulary import DECISIONS, Decision

# How a category that is turned off is written in a stored or sent policy.
OFF = "off"


class PolicyError(ValueError):
    """A policy that names an unknown category or malformed thresholds; the message says which."""


@dataclass(frozen=True)
class Policy:
    default: Thresholds
    # Per category: its own thresholds, or None for a category that is off (never leads to review).
    overrides: Mapping[str, Thresholds | None] = field(default_factory=dict)

    def thresholds_for(self, category: str) -> Thresholds | None:
        return self.overrides.get(category, self.default)

    def decide(self, scores: Mapping[str, float]) -> Decision:
        """The most severe decision any category gives; ``allow`` when every category is under its review."""
        worst = Decision.ALLOW
        for category, score in scores.items():
            thresholds = self.thresholds_for(category)
            if thresholds is not None:
                worst = max(worst, thresholds.decide(score), key=DECISIONS.index)
        return worst

    def flags(self, category: str, score: float) -> bool:
        """Whether ``category`` at ``score`` is at or over its review threshold (so it gets an evidence box)."""
        thresholds = self.thresholds_for(category)
        return thresholds is not None and score >= thresholds.review

    def overrides_dict(self) -> dict[str, Any]:
        """The overrides as stored and sent: ``{"luxury_travel": "off", "designer_bag": {"review": .., "block": ..}}``."""
        return {category: OFF if thresholds is None else {"review": thresholds.review, "block": thresholds.block}
                for category, thresholds in sorted(self.overrides.items())}

    def to_dict(self) -> dict[str, Any]:
        """The whole policy, as a decision records which one applied."""
        return {"review": self.default.review, "block": self.default.block, "categories": self.overrides_dict()}

    @classmethod
    def with_overrides(cls, default: Thresholds, overrides: Mapping[str, Any] | None) -> "Policy":
        """``default`` adjusted by ``overrides`` in the stored form; raises PolicyError naming what is wrong."""
        parsed: dict[str, Thresholds | None] = {}
        for category, value in (overrides or {}).items():
            if category not in CATEGORY_IDS:
                raise PolicyError(f"unknown category {category!r} (the categories: {', '.join(CATEGORY_IDS)})")
            if value == OFF:
                parsed[category] = None
                continue
            try:
                parsed[category] = Thresholds(float(value["review"]), float(value["block"]))
            except (TypeError, KeyError, ValueError) as error:
                raise PolicyError(f"{category}: give {OFF!r} or review and block from 0 to 1, review <= block "
                                  f"({error})") from None
        return cls(default, parsed)
