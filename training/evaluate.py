"""``flexguard evaluate``: score a labelled manifest with ONNX models and write the comparison report.

Models are run through the same inference engine as the service (``inference/engine.py``), so the
figures describe the file that ships, not a training-time approximation of it. Each model's review
and block thresholds are chosen on the evaluated photos (5% and 1% false-positive rate), which puts
every model on the same footing; the primary model's thresholds and metrics can then be stamped
into its file (``--stamp``, or ``--stamp-into`` another file). On photos from new sources, a test of
the model as it ships, ``--thresholds stamped`` keeps each model's own stamped thresholds instead:
choosing them on the test photos would hide how far they drift from what users get.

``--split folds`` is cross-validation: each fold's photos are scored by the model trained without
them (a path with ``{fold}`` names one model per fold; a path without it serves every fold), and the
out-of-fold scores are pooled. With folds by source that is the honest number: every photo is scored
by a model that never saw its source. Thresholds are chosen on the pooled scores, and the report adds
each fold's figures and their mean.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flexguard.datasets.manifest import Manifest, ManifestError
from flexguard.datasets.splits import assign_folds, group_split, random_split
from flexguard.inference.engine import Engine, ImageError

from .metrics import choose_thresholds, flex_mask, fold_figures, overall_risk
from .report import EvalResult, ReportFiles, write_report
from .score_cache import ScoreCache

SCORE_BATCH = 32
SPLITS = ("group", "random", "all", "folds")
# Where the review and block thresholds come from: chosen on the evaluated photos, or each model's own file.
THRESHOLD_SOURCES = ("chosen", "stamped")
# In a model path, replaced by the fold number under --split folds.
FOLD_FIELD = "{fold}"
DEFAULT_SPLIT_OPTIONS = {"val_fold": 0, "n_folds": 5, "seed": 0, "train_only": [], "by": "group"}


def model_for_fold(path: Path, fold: int) -> Path:
    return Path(str(path).replace(FOLD_FIELD, str(fold)))


def select_split(manifest: Manifest, split: str, split_options: dict) -> tuple[Manifest, str]:
    """The photos to evaluate on, and a one-line description of how they were chosen.

    ``split_options`` are ``group_split``'s keyword arguments (fold, folds, seed, train-only groups, unit).
    """
    if split == "all":
        return manifest, "every photo in the manifest"
    options = {**DEFAULT_SPLIT_OPTIONS, **split_options}
    if split == "group":
        _, val_idx = group_split(manifest, **options)
        pinned = f", train-only groups: {', '.join(options['train_only'])}" if options["train_only"] else ""
        kept = f", kept split by group: {', '.join(options['keep_subgroups'])}" if options.get("keep_subgroups") else ""
        return manifest.subset(val_idx), (f"held-out validation: fold {options['val_fold']} of {options['n_folds']} "
                                          f"by {options['by']}, seed {options['seed']}{pinned}{kept}")
    if split == "random":
        _, val_idx = random_split(manifest, seed=options["seed"])
        return manifest.subset(val_idx), f"random split, seed {options['seed']} (leaks photo style; an upper bound)"
    raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")


def score_manifest(engine: Engine, manifest: Manifest, desc: str, cache: ScoreCache | None = None) -> np.ndarray:
    """Per-category scores (N, C) for every photo; those ``cache`` holds for this model are not scored again."""
    paths = [r.path for r in manifest.records]
    if cache is None:
        return _score_paths(engine, paths, manifest, desc)
    return cache.scores(paths, lambda missing: _score_paths(engine, [paths[i] for i in missing], manifest, desc))


def _score_paths(engine: Engine, paths: list[Path], manifest: Manifest, desc: str) -> np.ndarray:
    """Scores for ``paths`` (photos of ``manifest``), decoding in threads while the model runs batches."""
    scores = np.zeros((len(paths), len(engine.info.category_ids)), dtype=np.float32)
    with ThreadPoolExecutor() as pool, tqdm(total=len(paths), desc=desc, unit="photo") as progress:
        for start in range(0, len(paths), SCORE_BATCH):
            chunk = paths[start:start + SCORE_BATCH]
            try:
                prepared = list(pool.map(engine.prepare, chunk))
            except ImageError as error:
                raise ManifestError(f"a photo in {manifest.path} cannot be read: {error.message}") from None
            scores[start:start + len(chunk)] = engine.run(np.stack([p.tensor for p in prepared]))[0]
            progress.update(len(chunk))
    return scores


def evaluate(
    models: dict[str, Path],
    primary: str,
    manifest: Manifest,
    split: str,
    out_dir: Path,
    split_options: dict | None = None,
    notes: list[str] | None = None,
    thresholds: str = "chosen",
    score_cache: Path | None = None,
) -> ReportFiles:
    """Score ``manifest``'s split with each model and write ``report.md``, ``report.html`` and ``metrics.json``.

    ``split_options``: ``group_split``'s keyword arguments (default: fold 0 of 5 by group, seed 0).
    ``thresholds``: "chosen" on these photos, or each model's "stamped" ones (not with folds, whose
    models each carry their own fold's thresholds).
    ``score_cache``: a folder of scores by model file and photo (``score_cache.py``); None scores every photo.
    """
    if thresholds not in THRESHOLD_SOURCES:
        raise ValueError(f"thresholds must be one of {THRESHOLD_SOURCES}, not {thresholds!r}")
    if split == "folds":
        if thresholds != "chosen":
            raise ValueError("cross-validation chooses its thresholds on the pooled out-of-fold scores")
        return _evaluate_folds(models, primary, manifest, out_dir, split_options or {}, notes or [], score_cache)
    subset, description = select_split(manifest, split, split_options or {})
    labels = subset.labels()
    paths = [str(r.path) for r in subset.records]
    results = []
    for name, path in models.items():
        engine = Engine(path)
        scores = score_manifest(engine, subset, f"scoring with {name}", _cache_for(score_cache, path))
        chosen = engine.info.thresholds if thresholds == "stamped" else choose_thresholds(flex_mask(labels), overall_risk(scores))
        results.append(EvalResult.evaluate(name, labels, scores, chosen, paths, subset.sources(), subset.hard_negatives()))
    all_notes = [f"Photos: {len(subset)} ({description}).", f"Data manifest sha256: {manifest.sha256}.", *(notes or [])]
    return write_report(out_dir, results, primary=primary, title="flexguard evaluation", notes=all_notes,
                        thresholds_stamped=thresholds == "stamped")


def _cache_for(folder: Path | None, model: Path) -> ScoreCache | None:
    return None if folder is None else ScoreCache(folder, model)


def _evaluate_folds(models: dict[str, Path], primary: str, manifest: Manifest, out_dir: Path, split_options: dict,
                    notes: list[str], score_cache: Path | None) -> ReportFiles:
    """Cross-validation: every fold scored by its own model, the out-of-fold scores pooled."""
    options = {**DEFAULT_SPLIT_OPTIONS, **split_options}
    n_folds = options["n_folds"]
    folds = assign_folds(manifest, n_folds=n_folds, seed=options["seed"], train_only=options["train_only"],
                         by=options["by"], keep_subgroups=options.get("keep_subgroups", ()))
    validated = np.flatnonzero(folds >= 0)  # train-only groups are never scored
    subset, fold_of = manifest.subset(validated), folds[validated]
    labels = subset.labels()
    results = []
    for name, template in models.items():
        scores = np.zeros(labels.shape, dtype=np.float32)
        for fold in range(n_folds):
            members = np.flatnonzero(fold_of == fold)
            path = model_for_fold(template, fold)
            scores[members] = score_manifest(Engine(path), subset.subset(members), f"{name}, fold {fold}",
                                             _cache_for(score_cache, path))
        thresholds = choose_thresholds(flex_mask(labels), overall_risk(scores))
        result = EvalResult.evaluate(name, labels, scores, thresholds, [str(r.path) for r in subset.records],
                                     subset.sources(), subset.hard_negatives())
        result.metrics["folds"] = fold_figures(labels, scores, fold_of, n_folds)
        results.append(result)
    kept = f", kept split by group: {', '.join(options['keep_subgroups'])}" if options.get("keep_subgroups") else ""
    description = (f"out of fold: each of {n_folds} folds by {options['by']} (seed {options['seed']}{kept}) scored by the "
                   "model trained without it, scores pooled; thresholds chosen on the pooled scores")
    all_notes = [f"Photos: {len(subset)} ({description}).", f"Data manifest sha256: {manifest.sha256}.", *notes]
    return write_report(out_dir, results, primary=primary, title="flexguard cross-validation", notes=all_notes)
