"""The numbers that say whether a flexguard model is good enough, computed one way everywhere.

Training picks its thresholds here, export stores these metrics in the ONNX metadata and the
report compares models with them, so a "recall at 1% FPR" means the same thing in all three. The
functions take plain arrays (scores already computed, e.g. by onnxruntime) and never import torch.

A photo's risk is its highest category score; it is "flex" when it has any category and
"ordinary" otherwise. Rates are computed at ``risk >= threshold``, as ``Thresholds.decide`` does.
Where a number is undefined on the data given (a source with only ordinary photos has no recall),
it is ``None`` rather than an exception or a misleading 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from flexguard.models.metadata import Thresholds, overall_risk
from flexguard.models.taxonomy import CATEGORY_IDS, ORDINARY
from flexguard.models.vocabulary import DECISIONS

# The review threshold sends at most 5% of ordinary photos to a person; the block threshold wrongly
# stops at most 1% of them from being posted.
REVIEW_FPR = 0.05
BLOCK_FPR = 0.01
# Four decimals keep differences between models visible without printing float noise into JSON.
DECIMALS = 4
# The operating points reported for every model, whatever thresholds it ships with.
HEADLINE_RECALL_FPRS = {"recall_at_fpr_1pct": 0.01, "recall_at_fpr_5pct": 0.05}
# Confusion-matrix row for photos that show several categories at once.
MULTI = "multi"
# Risk is a probability, so no threshold above this is meaningful.
MAX_THRESHOLD = 1.0


def flex_mask(labels: np.ndarray) -> np.ndarray:
    """``[N, C]`` multi-hot labels to ``[N]`` bool: does the photo show any category?"""
    return np.asarray(labels).astype(bool).any(axis=1)


def _has_both_classes(is_flex: np.ndarray) -> bool:
    return bool(is_flex.any() and (~is_flex).any())


def _roc(is_flex: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Every distinct score is kept as a candidate threshold, so no operating point is skipped.
    return roc_curve(is_flex, risk, drop_intermediate=False)


def _as_flags_and_risk(is_flex: Sequence[bool] | np.ndarray, risk: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flags = np.asarray(is_flex, dtype=bool)
    values = np.asarray(risk, dtype=np.float64)
    if flags.shape != values.shape or flags.ndim != 1:
        raise ValueError(f"is_flex and risk must be 1-D and of one length, got shapes {flags.shape} and {values.shape}")
    return flags, values


def recall_at_fpr(is_flex: Sequence[bool] | np.ndarray, risk: Sequence[float] | np.ndarray, fpr: float) -> float | None:
    """Share of flex photos caught at the best threshold that flags at most ``fpr`` of ordinary photos.

    Read off the ROC curve at its actual points (no interpolation between them), so it is a recall
    some threshold really achieves. ``None`` when flex or ordinary photos are missing.
    """
    flags, values = _as_flags_and_risk(is_flex, risk)
    if not _has_both_classes(flags):
        return None
    false_positive_rates, true_positive_rates, _ = _roc(flags, values)
    # The ROC's FPR never decreases along the curve, and neither does its TPR.
    last_within = np.searchsorted(false_positive_rates, fpr, side="right") - 1
    return float(true_positive_rates[last_within])


def threshold_at_fpr(is_flex: Sequence[bool] | np.ndarray, risk: Sequence[float] | np.ndarray, fpr: float) -> float:
    """The lowest threshold (flagging ``risk >= threshold``) whose false-positive rate is at most ``fpr``.

    The lowest such threshold catches the most flex photos within the FPR budget. If even the
    highest-risk photo is ordinary, the threshold is set just above it (capped at 1). Choosing a
    threshold needs both flex and ordinary photos; without them it raises ``ValueError``.
    """
    flags, values = _as_flags_and_risk(is_flex, risk)
    if not _has_both_classes(flags):
        raise ValueError("choosing a threshold needs both flex and ordinary photos")
    false_positive_rates, _, thresholds = _roc(flags, values)
    last_within = np.searchsorted(false_positive_rates, fpr, side="right") - 1
    if last_within > 0:
        return float(thresholds[last_within])
    # The curve's first point flags nothing (its threshold is infinite): the top-scoring photo is
    # ordinary, so the threshold goes just above it.
    above_top = float(np.nextafter(thresholds[1], np.inf))
    return min(above_top, MAX_THRESHOLD)


def choose_thresholds(
    is_flex: Sequence[bool] | np.ndarray,
    risk: Sequence[float] | np.ndarray,
    review_fpr: float = REVIEW_FPR,
    block_fpr: float = BLOCK_FPR,
) -> Thresholds:
    """Review and block thresholds from validation risks, at the given false-positive budgets."""
    if not 0.0 <= block_fpr <= review_fpr <= 1.0:
        raise ValueError(f"need 0 <= block_fpr <= review_fpr <= 1, got block_fpr={block_fpr}, review_fpr={review_fpr}")
    # A smaller FPR budget never gives a lower threshold, so review <= block holds by construction.
    return Thresholds(
        review=threshold_at_fpr(is_flex, risk, review_fpr),
        block=threshold_at_fpr(is_flex, risk, block_fpr),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), DECIMALS)


def _flagged_rate(risk: np.ndarray, threshold: float) -> float | None:
    """Share of ``risk`` at or above ``threshold``; ``None`` for an empty group."""
    return float(np.mean(risk >= threshold)) if risk.size else None


def _roc_auc(is_flex: np.ndarray, risk: np.ndarray) -> float | None:
    return float(roc_auc_score(is_flex, risk)) if _has_both_classes(is_flex) else None


def _at_both_thresholds(risk: np.ndarray, thresholds: Thresholds) -> dict[str, float | None]:
    return {
        "review": _rounded(_flagged_rate(risk, thresholds.review)),
        "block": _rounded(_flagged_rate(risk, thresholds.block)),
    }


def true_class(labels_row: np.ndarray, category_ids: Sequence[str] = CATEGORY_IDS) -> str:
    """Confusion-matrix row of one photo: its category, ``MULTI`` for several, ``ORDINARY`` for none."""
    present = np.flatnonzero(np.asarray(labels_row).astype(bool))
    if present.size == 0:
        return ORDINARY
    if present.size > 1:
        return MULTI
    return category_ids[int(present[0])]


def _confusion(labels: np.ndarray, risk: np.ndarray, thresholds: Thresholds, category_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    rows = (*category_ids, MULTI, ORDINARY)
    counts = {row: {decision: 0 for decision in DECISIONS} for row in rows}
    for labels_row, photo_risk in zip(labels, risk):
        counts[true_class(labels_row, category_ids)][thresholds.decide(float(photo_risk))] += 1
    return counts


def _average_precisions(labels: np.ndarray, scores: np.ndarray, category_ids: Sequence[str]) -> dict[str, float | None]:
    precisions: dict[str, float | None] = {}
    for column, category_id in enumerate(category_ids):
        positives = labels[:, column].astype(bool)
        # AP is undefined for a category with no photos of it.
        precisions[category_id] = (
            _rounded(average_precision_score(positives, scores[:, column])) if positives.any() else None
        )
    return precisions


def _by_source(
    is_flex: np.ndarray, risk: np.ndarray, hard_negative: np.ndarray, sources: np.ndarray, thresholds: Thresholds
) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for source in sorted(set(sources.tolist())):
        in_source = sources == source
        source_flex = is_flex[in_source]
        source_risk = risk[in_source]
        table[source] = {
            "n": int(in_source.sum()),
            "n_flex": int(source_flex.sum()),
            "roc_auc": _rounded(_roc_auc(source_flex, source_risk)),
            "recall_at_review": _rounded(_flagged_rate(source_risk[source_flex], thresholds.review)),
            "fpr_at_review": _rounded(_flagged_rate(source_risk[~source_flex], thresholds.review)),
            "hard_negative_fpr_at_review": _rounded(_flagged_rate(risk[in_source & hard_negative], thresholds.review)),
        }
    return table


def fold_figures(labels: np.ndarray, scores: np.ndarray, fold_of: np.ndarray, n_folds: int) -> dict[str, Any]:
    """Each fold's headline figures on its own photos, and their mean (the acceptance figures of #11)."""
    is_flex, risk = flex_mask(np.asarray(labels).astype(bool)), overall_risk(scores)
    per_fold = []
    for fold in range(n_folds):
        members = fold_of == fold
        per_fold.append({
            "fold": fold, "n": int(members.sum()), "n_flex": int(is_flex[members].sum()),
            "roc_auc": _rounded(_roc_auc(is_flex[members], risk[members])),
            **{key: _rounded(recall_at_fpr(is_flex[members], risk[members], fpr)) for key, fpr in HEADLINE_RECALL_FPRS.items()},
        })
    keys = ["roc_auc", *HEADLINE_RECALL_FPRS]
    mean = {key: _rounded(float(np.mean(values))) if (values := [f[key] for f in per_fold if f[key] is not None]) else None
            for key in keys}
    return {"per_fold": per_fold, "mean": mean}


def compute_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    hard_negative: Sequence[bool] | np.ndarray,
    sources: Sequence[str] | np.ndarray,
    thresholds: Thresholds,
    category_ids: Sequence[str] = CATEGORY_IDS,
) -> dict[str, Any]:
    """All headline metrics of one model on one set of photos, as a JSON-ready dict.

    ``labels`` is ``[N, C]`` multi-hot and ``scores`` ``[N, C]`` per-category probabilities, columns in
    ``category_ids`` order; ``hard_negative`` flags ordinary photos that look like luxury;
    ``sources`` says where each photo came from. Floats are rounded to ``DECIMALS`` places and
    undefined values are ``None``.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    hard_negative_flags = np.asarray(hard_negative, dtype=bool)
    source_names = np.asarray([str(source) for source in sources], dtype=object)
    expected_shape = (labels.shape[0], len(category_ids))
    if labels.shape != expected_shape or scores.shape != expected_shape:
        raise ValueError(f"labels and scores must both be [N, {len(category_ids)}], got {labels.shape} and {scores.shape}")
    if hard_negative_flags.shape != (labels.shape[0],) or source_names.shape != (labels.shape[0],):
        raise ValueError("hard_negative and sources need one entry per photo")

    is_flex = flex_mask(labels)
    risk = overall_risk(scores)
    # A photo flagged hard-negative but labelled with a category is flex; it is not counted as a hard negative.
    hard_negative_flags = hard_negative_flags & ~is_flex
    average_precisions = _average_precisions(labels, scores, category_ids)
    defined_precisions = [value for value in average_precisions.values() if value is not None]
    return {
        "n": int(labels.shape[0]),
        "n_flex": int(is_flex.sum()),
        "n_hard_negative": int(hard_negative_flags.sum()),
        # Not rounded: they are exact cut points, and rounding would move photos across them.
        "thresholds": {"review": thresholds.review, "block": thresholds.block},
        "roc_auc": _rounded(_roc_auc(is_flex, risk)),
        **{key: _rounded(recall_at_fpr(is_flex, risk, fpr)) for key, fpr in HEADLINE_RECALL_FPRS.items()},
        "average_precision": average_precisions,
        "mean_average_precision": _rounded(np.mean(defined_precisions)) if defined_precisions else None,
        "recall": _at_both_thresholds(risk[is_flex], thresholds),
        "ordinary_fpr": _at_both_thresholds(risk[~is_flex], thresholds),
        "hard_negative_fpr": _at_both_thresholds(risk[hard_negative_flags], thresholds),
        "confusion": _confusion(labels, risk, thresholds, category_ids),
        "by_source": _by_source(is_flex, risk, hard_negative_flags, source_names, thresholds),
    }
