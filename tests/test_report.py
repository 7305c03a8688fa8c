"""Metrics on hand-built cases, and the evaluation report on synthetic scores and tiny photos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexguard.models.metadata import Thresholds
from flexguard.models.taxonomy import CATEGORY_IDS, ORDINARY
from flexguard.training.metrics import (
    MULTI,
    choose_thresholds,
    compute_metrics,
    recall_at_fpr,
    threshold_at_fpr,
)
from flexguard.training.report import THUMBNAIL_PX, EvalResult, write_report

SEED = 1234
N_CATEGORIES = len(CATEGORY_IDS)

# 20 ordinary photos with risks 0.00, 0.05, ..., 0.95 and 3 flex photos.
ORDINARY_RISKS = [step / 20 for step in range(20)]
FLEX_RISKS = [0.975, 0.5, 0.03]


def _hand_built() -> tuple[np.ndarray, np.ndarray]:
    is_flex = np.array([False] * len(ORDINARY_RISKS) + [True] * len(FLEX_RISKS))
    return is_flex, np.array(ORDINARY_RISKS + FLEX_RISKS)


def test_perfect_ranking_has_full_recall_and_auc_one():
    is_flex = np.array([False] * 40 + [True] * 10)
    risk = np.concatenate([np.linspace(0.0, 0.4, 40), np.linspace(0.6, 1.0, 10)])
    assert recall_at_fpr(is_flex, risk, 0.05) == 1.0
    assert recall_at_fpr(is_flex, risk, 0.0) == 1.0
    labels = np.zeros((50, N_CATEGORIES), dtype=bool)
    labels[40:, 0] = True
    scores = np.zeros((50, N_CATEGORIES))
    scores[:, 0] = risk
    metrics = compute_metrics(labels, scores, np.zeros(50, bool), ["web"] * 50, Thresholds(0.5, 0.5))
    assert metrics["roc_auc"] == 1.0
    assert metrics["recall_at_fpr_1pct"] == 1.0
    assert metrics["recall_at_fpr_5pct"] == 1.0
    assert metrics["recall"] == {"review": 1.0, "block": 1.0}
    assert metrics["ordinary_fpr"] == {"review": 0.0, "block": 0.0}


def test_threshold_and_recall_at_fpr_on_a_hand_built_case():
    is_flex, risk = _hand_built()
    # 5% of 20 ordinary photos is one: the one at 0.95 may be flagged, the one at 0.90 may not.
    assert threshold_at_fpr(is_flex, risk, 0.05) == pytest.approx(0.95)
    assert recall_at_fpr(is_flex, risk, 0.05) == pytest.approx(1 / 3)
    # 10%: two ordinary photos (0.95, 0.90); lowest threshold that keeps it there is 0.90.
    assert threshold_at_fpr(is_flex, risk, 0.10) == pytest.approx(0.90)
    # No false positive allowed: only the flex photo above every ordinary one is caught.
    assert threshold_at_fpr(is_flex, risk, 0.0) == pytest.approx(0.975)
    assert recall_at_fpr(is_flex, risk, 0.0) == pytest.approx(1 / 3)
    # Half the ordinary photos (down to 0.50) brings in the flex photo at 0.5.
    assert threshold_at_fpr(is_flex, risk, 0.5) == pytest.approx(0.5)
    assert recall_at_fpr(is_flex, risk, 0.5) == pytest.approx(2 / 3)
    assert threshold_at_fpr(is_flex, risk, 1.0) == pytest.approx(0.0)
    assert recall_at_fpr(is_flex, risk, 1.0) == 1.0


def test_threshold_goes_just_above_an_ordinary_top_photo():
    is_flex = np.array([False, False, True])
    risk = np.array([0.99, 0.1, 0.8])
    threshold = threshold_at_fpr(is_flex, risk, 0.0)
    assert 0.99 < threshold <= 1.0
    assert not (risk[~is_flex] >= threshold).any()
    assert recall_at_fpr(is_flex, risk, 0.0) == 0.0


def test_single_class_is_undefined_not_an_error_for_recall():
    assert recall_at_fpr([False, False], [0.2, 0.4], 0.05) is None
    assert recall_at_fpr([True, True], [0.2, 0.4], 0.05) is None
    with pytest.raises(ValueError):
        threshold_at_fpr([False, False], [0.2, 0.4], 0.05)


def test_choose_thresholds_meets_both_fpr_budgets():
    rng = np.random.default_rng(SEED)
    is_flex = rng.random(2000) < 0.3
    risk = np.clip(rng.normal(np.where(is_flex, 0.7, 0.3), 0.15), 0.0, 1.0)
    thresholds = choose_thresholds(is_flex, risk)
    assert thresholds.review <= thresholds.block
    ordinary = risk[~is_flex]
    assert np.mean(ordinary >= thresholds.review) <= 0.05
    assert np.mean(ordinary >= thresholds.block) <= 0.01
    with pytest.raises(ValueError):
        choose_thresholds(is_flex, risk, review_fpr=0.01, block_fpr=0.05)


def test_compute_metrics_degenerate_groups_and_confusion():
    labels = np.zeros((6, N_CATEGORIES), dtype=bool)
    labels[0, 0] = True  # a car
    labels[1, [1, 2]] = True  # a bag and a watch in one photo
    labels[2, 1] = True  # a bag
    scores = np.array(
        [
            [0.9, 0.0, 0.0, 0.0],  # car, blocked
            [0.0, 0.6, 0.5, 0.0],  # multi, review
            [0.0, 0.1, 0.0, 0.0],  # bag, allowed
            [0.0, 0.0, 0.7, 0.0],  # ordinary hard negative, review
            [0.1, 0.0, 0.0, 0.0],  # ordinary, allowed
            [0.0, 0.0, 0.0, 0.95],  # ordinary, blocked
        ]
    )
    hard_negative = [False, False, False, True, False, False]
    sources = ["brand", "brand", "mixed", "mixed", "stock", "stock"]
    metrics = compute_metrics(labels, scores, hard_negative, sources, Thresholds(review=0.5, block=0.8))

    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics
    assert metrics["n"] == 6 and metrics["n_flex"] == 3 and metrics["n_hard_negative"] == 1
    assert metrics["average_precision"]["luxury_travel"] is None  # no travel photos
    defined = [value for value in metrics["average_precision"].values() if value is not None]
    assert metrics["mean_average_precision"] == pytest.approx(np.mean(defined), abs=1e-4)
    assert metrics["recall"] == {"review": round(2 / 3, 4), "block": round(1 / 3, 4)}
    assert metrics["ordinary_fpr"] == {"review": round(2 / 3, 4), "block": round(1 / 3, 4)}
    assert metrics["hard_negative_fpr"] == {"review": 1.0, "block": 0.0}

    confusion = metrics["confusion"]
    assert list(confusion) == [*CATEGORY_IDS, MULTI, ORDINARY]
    assert confusion["luxury_car"] == {"allow": 0, "review": 0, "block": 1}
    assert confusion["designer_bag"] == {"allow": 1, "review": 0, "block": 0}
    assert confusion[MULTI] == {"allow": 0, "review": 1, "block": 0}
    assert confusion[ORDINARY] == {"allow": 1, "review": 1, "block": 1}
    assert sum(sum(row.values()) for row in confusion.values()) == 6

    by_source = metrics["by_source"]
    assert list(by_source) == ["brand", "mixed", "stock"]
    assert by_source["brand"]["roc_auc"] is None  # only flex photos
    assert by_source["brand"]["fpr_at_review"] is None
    assert by_source["brand"]["recall_at_review"] == 1.0
    assert by_source["brand"]["hard_negative_fpr_at_review"] is None
    assert by_source["stock"]["roc_auc"] is None  # only ordinary photos
    assert by_source["stock"]["recall_at_review"] is None
    assert by_source["stock"]["fpr_at_review"] == 0.5
    assert by_source["mixed"]["roc_auc"] == 0.0  # the hard negative outscores the bag
    assert by_source["mixed"]["hard_negative_fpr_at_review"] == 1.0


def test_compute_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((3, N_CATEGORIES)), np.zeros((3, 2)), [False] * 3, ["a"] * 3, Thresholds(0.5, 0.9))


def _synthetic_result(name: str, tmp_path, rng: np.random.Generator, noise: float) -> EvalResult:
    n_photos = 60
    labels = np.zeros((n_photos, N_CATEGORIES), dtype=bool)
    flex_rows = rng.random(n_photos) < 0.5
    labels[flex_rows, rng.integers(0, N_CATEGORIES, flex_rows.sum())] = True
    scores = np.clip(labels * 0.7 + rng.normal(0.15, noise, labels.shape), 0.0, 1.0)
    hard_negative = ~flex_rows & (rng.random(n_photos) < 0.4)
    # One source name that would be markup if it were not escaped.
    sources = [("<b>forum</b> & co|x" if index % 3 == 0 else f"source_{index % 3}") for index in range(n_photos)]
    photo_dir = tmp_path / "photos"
    photo_dir.mkdir(exist_ok=True)
    paths = []
    for index in range(n_photos):
        path = photo_dir / f"photo_{index:02d}.png"
        if index % 10 != 7:  # some photos are missing: the report must still be written
            Image.new("RGB", (320, 200), tuple(int(v) for v in rng.integers(0, 255, 3))).save(path)
        paths.append(str(path))
    thresholds = choose_thresholds(labels.any(axis=1), scores.max(axis=1))
    return EvalResult.evaluate(name, labels, scores, thresholds, paths, sources, hard_negative)


def _write(out_dir, tmp_path):
    rng = np.random.default_rng(SEED)
    results = [
        _synthetic_result("flexguard", tmp_path, rng, noise=0.15),
        _synthetic_result("zero-training <baseline>", tmp_path, rng, noise=0.3),
    ]
    # The worst false positive's file is gone: it is listed without a thumbnail.
    primary = results[0]
    worst_false_positive = np.flatnonzero(~primary.is_flex)[np.argmax(primary.risk[~primary.is_flex])]
    Path(primary.paths[worst_false_positive]).unlink(missing_ok=True)
    return write_report(out_dir, results, primary="flexguard", title="Test & report", notes=["manifest <abc>"], n_examples=5)


def test_write_report_produces_self_contained_deterministic_files(tmp_path):
    files = _write(tmp_path / "report", tmp_path)
    out_dir = tmp_path / "report"
    for name in ("metrics.json", "report.md", "report.html", "roc.png", "pr.png", "score_hist.png"):
        assert (out_dir / name).is_file(), name
    assert files.html == out_dir / "report.html"

    summary = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert summary["primary"] == "flexguard"
    assert list(summary["models"]) == ["flexguard", "zero-training <baseline>"]
    assert summary["models"]["flexguard"]["n"] == 60

    thumbnails = sorted((out_dir / "thumbs").glob("*.jpg"))
    assert 0 < len(thumbnails) < 10
    assert not (out_dir / "thumbs" / "fp_01.jpg").exists()
    assert list(files.thumbnails) == [path for path in files.thumbnails if path.is_file()]
    for thumbnail in thumbnails:
        with Image.open(thumbnail) as image:
            assert max(image.size) <= THUMBNAIL_PX

    page = (out_dir / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r"""src\s*=\s*["']?([^"'\s>]*)""", page, flags=re.IGNORECASE)
    assert sources and all(source.startswith("data:") for source in sources)
    assert "<b>forum" not in page and "&lt;b&gt;forum&lt;/b&gt; &amp; co|x" in page
    assert "&lt;baseline&gt;" in page and "Test &amp; report" in page

    markdown = (out_dir / "report.md").read_text(encoding="utf-8")
    for referenced in re.findall(r"\]\(([^)]+)\)", markdown):
        assert (out_dir / referenced).is_file(), referenced
    assert "<b>" not in markdown and "\\|x" in markdown
    assert "(unreadable)" in markdown and "unreadable</div>" in page

    again = _write(tmp_path / "again", tmp_path)
    for name in ("metrics.json", "report.md", "report.html"):
        assert (again.markdown.parent / name).read_bytes() == (out_dir / name).read_bytes(), name


def test_write_report_rejects_unknown_primary(tmp_path):
    rng = np.random.default_rng(SEED)
    result = _synthetic_result("flexguard", tmp_path, rng, noise=0.1)
    with pytest.raises(ValueError):
        write_report(tmp_path / "report", [result], primary="other")
