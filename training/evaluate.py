"""``flexguard evaluate``: score a labelled manifest with ONNX models and write the comparison report.

Models are run through the same inference engine as the service (``service/engine.py``), so the
figures describe the file that ships, not a training-time approximation of it. Each model's review
and block thresholds are chosen on the evaluated split (5% and 1% false-positive rate), which puts
every model on the same footing; the primary model's thresholds and metrics can then be stamped
into its file with ``flexguard export --evaluation``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flexguard.datasets.manifest import Manifest, ManifestError
from flexguard.datasets.splits import group_split, random_split
from flexguard.inference.engine import Engine, ImageError

from .metrics import choose_thresholds, flex_mask, overall_risk
from .report import EvalResult, ReportFiles, write_report

SCORE_BATCH = 32
SPLITS = ("group", "random", "all")


def select_split(manifest: Manifest, split: str, split_options: dict) -> tuple[Manifest, str]:
    """The photos to evaluate on, and a one-line description of how they were chosen.

    ``split_options`` are ``group_split``'s keyword arguments (fold, folds, seed, train-only groups, unit).
    """
    if split == "all":
        return manifest, "every photo in the manifest"
    options = {"val_fold": 0, "n_folds": 5, "seed": 0, "train_only": [], "by": "group", **split_options}
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


def score_manifest(engine: Engine, manifest: Manifest, desc: str) -> np.ndarray:
    """Per-category scores (N, C) for every photo, decoding in threads while the model runs batches."""
    paths = [r.path for r in manifest.records]
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
) -> ReportFiles:
    """Score ``manifest``'s split with each model and write ``report.md``, ``report.html`` and ``metrics.json``.

    ``split_options``: ``group_split``'s keyword arguments (default: fold 0 of 5 by group, seed 0).
    """
    subset, description = select_split(manifest, split, split_options or {})
    labels = subset.labels()
    paths = [str(r.path) for r in subset.records]
    results = []
    for name, path in models.items():
        engine = Engine(path)
        scores = score_manifest(engine, subset, desc=f"scoring with {name}")
        thresholds = choose_thresholds(flex_mask(labels), overall_risk(scores))
        results.append(EvalResult.evaluate(name, labels, scores, thresholds, paths, subset.sources(), subset.hard_negatives()))
    all_notes = [f"Photos: {len(subset)} ({description}).", f"Data manifest sha256: {manifest.sha256}.", *(notes or [])]
    return write_report(out_dir, results, primary=primary, title="flexguard evaluation", notes=all_notes)
