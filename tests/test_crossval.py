"""Cross-validation in ``flexguard evaluate --split folds``: each fold is scored by its own model, the
out-of-fold scores are pooled, each fold's figures are reported with their mean, and the pooled
thresholds and figures can be stamped into the model trained on all the data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from flexguard.cli import main
from flexguard.datasets import load_manifest
from flexguard.datasets.splits import assign_folds
from flexguard.models.metadata import read_info
from review_world import grey_photo, red_photo

SOURCES = 10
PHOTOS_PER_KIND = 2  # per source: red "cars" and grey ordinary photos
N_FOLDS = 5
BLIND_FOLD = 3
USER_ERROR = 2


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cv")
    lines = ["path,category,group,hard_negative,source_repo"]
    for source in range(SOURCES):
        for photo in range(PHOTOS_PER_KIND):
            for kind, category, data in (("red", "luxury_car", red_photo()), ("grey", "ordinary", grey_photo())):
                relative = f"s{source}/{kind}{photo}.png"
                (root / relative).parent.mkdir(exist_ok=True)
                (root / relative).write_bytes(data)
                lines.append(f"{relative},{category},owner/repo{source}:{kind},0,owner/repo{source}")
    path = root / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fold_models(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny model for every fold, except one fold whose model is blind: every photo gets the same scores."""
    root = tmp_path_factory.mktemp("folds")
    for fold in range(N_FOLDS):
        (root / f"fold-{fold}").mkdir()
        shutil.copy(tiny_model_path, root / f"fold-{fold}" / "m.onnx")
    blind = onnx.load(str(tiny_model_path))
    gain = next(t for t in blind.graph.initializer if t.name == "score_gain")
    gain.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(gain)), gain.name))
    onnx.save(blind, str(root / f"fold-{BLIND_FOLD}" / "m.onnx"))
    return root


def evaluate(manifest: Path, out: Path, *options: str) -> int:
    return main(["evaluate", "--manifest", str(manifest), "--out", str(out), "--split", "folds", "--by", "source", *options])


def test_each_fold_is_scored_by_its_own_model_and_the_folds_are_pooled(manifest, fold_models, tiny_model_path, tmp_path):
    target = tmp_path / "all-data.onnx"
    shutil.copy(tiny_model_path, target)
    out = tmp_path / "report"
    assert evaluate(manifest, out, "--model", f"cv={fold_models}/fold-{{fold}}/m.onnx",
                    "--compare", f"same-everywhere={tiny_model_path}", "--stamp-into", str(target)) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    folds = metrics["models"]["cv"]["folds"]
    assert [fold["fold"] for fold in folds["per_fold"]] == list(range(N_FOLDS))
    assert sum(fold["n"] for fold in folds["per_fold"]) == metrics["models"]["cv"]["n"] == len(load_manifest(manifest))
    aucs = [fold["roc_auc"] for fold in folds["per_fold"]]
    chance = 0.5
    assert aucs[BLIND_FOLD] == chance and all(auc == 1.0 for i, auc in enumerate(aucs) if i != BLIND_FOLD)
    assert folds["mean"]["roc_auc"] == pytest.approx((N_FOLDS - 1 + chance) / N_FOLDS)
    # Folds hold whole sources, as assign_folds makes them.
    folds_of = assign_folds(load_manifest(manifest), n_folds=N_FOLDS, by="source")
    assert {fold["n"] for fold in folds["per_fold"]} == set(np.bincount(folds_of).tolist())
    # A model path without {fold} serves every fold.
    assert metrics["models"]["same-everywhere"]["folds"]["mean"]["roc_auc"] == 1.0
    assert "By fold" in (out / "report.md").read_text()
    # The pooled thresholds and figures went into the all-data model.
    stamped = read_info(target)
    assert stamped.thresholds.review == metrics["models"]["cv"]["thresholds"]["review"]
    assert stamped.validation_metrics["folds"]["mean"]["roc_auc"] == folds["mean"]["roc_auc"]


@pytest.mark.parametrize("options, message", [
    (("--model", "m=models/fold-{fold}/m.onnx", "--split", "group"), "needs --split folds"),
    (("--model", "m=nowhere/fold-{fold}/m.onnx"), "not found: nowhere/fold-0/m.onnx"),
    (("--model", "MODEL", "--stamp"), "--stamp-into"),
    (("--model", "MODEL", "--thresholds", "stamped"), "pooled out-of-fold"),
])
def test_mistakes_are_one_line(manifest, fold_models, tmp_path, capsys, options, message):
    options = tuple(str(fold_models / "fold-{fold}" / "m.onnx") if option == "MODEL" else option for option in options)
    assert evaluate(manifest, tmp_path / "r", *options) == USER_ERROR
    assert message in capsys.readouterr().err


def test_a_test_on_new_sources_can_keep_the_models_stamped_thresholds(manifest, tiny_model_path, tmp_path):
    """On photos from new sources the question is what users get: the thresholds in the file, not new ones."""
    stamped = read_info(tiny_model_path).thresholds
    out = tmp_path / "kept"
    assert main(["evaluate", "--manifest", str(manifest), "--out", str(out), "--split", "all",
                 "--model", f"m={tiny_model_path}", "--thresholds", "stamped"]) == 0
    kept = json.loads((out / "metrics.json").read_text())["models"]["m"]["thresholds"]
    assert (kept["review"], kept["block"]) == (stamped.review, stamped.block)
    assert "as stamped in its file" in (out / "report.md").read_text()

    chosen_out = tmp_path / "chosen"
    assert main(["evaluate", "--manifest", str(manifest), "--out", str(chosen_out), "--split", "all",
                 "--model", f"m={tiny_model_path}"]) == 0
    chosen = json.loads((chosen_out / "metrics.json").read_text())["models"]["m"]["thresholds"]
    assert (chosen["review"], chosen["block"]) != (stamped.review, stamped.block)
    assert "chosen on validation" in (chosen_out / "report.md").read_text()


def test_stamping_thresholds_that_were_kept_is_refused(manifest, tiny_model_path, tmp_path, capsys):
    assert main(["evaluate", "--manifest", str(manifest), "--out", str(tmp_path / "r"), "--split", "all",
                 "--model", str(tiny_model_path), "--thresholds", "stamped", "--stamp"]) == USER_ERROR
    assert "nothing new to stamp" in capsys.readouterr().err


def test_a_score_cache_runs_each_model_file_once_per_photo(manifest, fold_models, tiny_model_path, tmp_path):
    """`make model` scores each fold's fp32 model in crossval and again as crossval-int8's reference."""
    cache = tmp_path / "scores"
    first = tmp_path / "first"
    assert evaluate(manifest, first, "--model", f"cv={fold_models}/fold-{{fold}}/m.onnx", "--score-cache", str(cache)) == 0
    # The four identical fold files share one entry; the blind fold's has its own.
    files = sorted(cache.glob("scores-*.npz"))
    assert len(files) == 2
    # Proof that a second run reads the cache rather than the model: every cached score set to one value
    # leaves nothing to rank, so the seeing folds drop from ROC-AUC 1.0 to chance.
    for path in files:
        with np.load(path) as stored:
            photos, scores = stored["photos"], stored["scores"]
        np.savez(path, photos=photos, scores=np.full_like(scores, 0.5))
    second = tmp_path / "second"
    assert evaluate(manifest, second, "--model", f"cv={fold_models}/fold-{{fold}}/m.onnx", "--score-cache", str(cache)) == 0
    mean_auc = json.loads((second / "metrics.json").read_text())["models"]["cv"]["folds"]["mean"]["roc_auc"]
    assert mean_auc == 0.5
    # Without the cache every photo is scored again.
    fresh = tmp_path / "fresh"
    assert evaluate(manifest, fresh, "--model", f"cv={fold_models}/fold-{{fold}}/m.onnx") == 0
    assert json.loads((fresh / "metrics.json").read_text())["models"]["cv"]["folds"]["mean"]["roc_auc"] > mean_auc


def test_the_score_cache_scores_only_photos_it_has_not_seen(tiny_model_path, tmp_path):
    from flexguard.training.score_cache import ScoreCache

    photos = []
    for index, data in enumerate((red_photo(), grey_photo())):
        photos.append(tmp_path / f"p{index}.png")
        photos[-1].write_bytes(data)
    asked: list[list[int]] = []

    def compute(indices: list[int]) -> np.ndarray:
        asked.append(indices)
        return np.array(indices, dtype=np.float32).reshape(-1, 1)

    folder = tmp_path / "cache"
    assert ScoreCache(folder, tiny_model_path).scores(photos[:1], compute).tolist() == [[0.0]]
    assert ScoreCache(folder, tiny_model_path).scores(photos, compute).tolist() == [[0.0], [1.0]]
    assert ScoreCache(folder, tiny_model_path).scores(photos[::-1], compute).tolist() == [[1.0], [0.0]]
    assert asked == [[0], [1]]
    assert ScoreCache(folder, tiny_model_path).scores([], compute).shape == (0, 1)
    # Any other bytes make another model file, with a cache of its own.
    other = tmp_path / "other.onnx"
    other.write_bytes(tiny_model_path.read_bytes() + b"\0")
    assert ScoreCache(folder, other).path != ScoreCache(folder, tiny_model_path).path
