"""Train/validation splits that do not flatter the model.

In flexdata, category and photo source are confounded (most watches are one site's catalogue shots,
many luxury cars one source's white-background cutouts), so a random split puts near-twins of the
validation photos into training and rewards learning photo style: a frozen-feature linear probe
scores ROC-AUC 0.98 on a random split but 0.88-0.97 split by group, depending on the fold. The
validation protocol is therefore a grouped, stratified k-fold split: every ``group`` lies wholly
in one fold, and each stratum (each category, ordinary hard negatives, other ordinary photos) is
spread over the folds as evenly as the groups allow. ``random_split`` exists only to report the
leaky figure beside the honest one.

A model is judged on photos from sources it has never seen, and a grouped split still lets other
groups of a validated photo's source into training. ``by="source"`` makes the whole source the unit
(every photo of a repository in one fold), except for the sources named in ``keep_subgroups``: those
were split by make or brand between the data and the hidden evaluation set (Stanford Cars by make,
Chrono24 by brand), so their groups stay the units there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from flexguard.models.taxonomy import CATEGORY_IDS, ORDINARY

from .manifest import Manifest, ManifestError

# The validation protocol: fold 0 of 5, seed 0 (see datasets/README.md).
DEFAULT_N_FOLDS = 5
DEFAULT_VAL_FOLD = 0
DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2

HARD_NEGATIVE_STRATUM = f"{ORDINARY} (hard negative)"
OTHER_ORDINARY_STRATUM = f"{ORDINARY} (other)"
# What each fold should hold a fair share of; a multi-category photo counts in each of its categories.
STRATA: tuple[str, ...] = (*CATEGORY_IDS, HARD_NEGATIVE_STRATUM, OTHER_ORDINARY_STRATUM)

# What one fold holds whole: a ``group`` (a source's style or sub-set), or a whole ``source``.
UNITS = ("group", "source")
# Fold number of the groups that are always trained on (``train_only``).
TRAIN_ONLY = -1
# Fewer folds leave nothing to train or nothing to validate on.
MIN_FOLDS = 2
# Spreads computed in floating point that differ by less than this are equal placements; the
# tie-breaks then decide, which keeps the result identical across platforms.
SPREAD_TIE_TOLERANCE = 1e-12
# Bytes of a sha256 digest used as a sort key: 64 bits make collisions irrelevant.
SORT_KEY_BYTES = 8


def strata_membership(manifest: Manifest) -> np.ndarray:
    """Bool [N, len(STRATA)]: which strata each record counts in."""
    categories = manifest.labels().astype(bool)
    ordinary = ~manifest.is_flex()
    hard_negative = manifest.hard_negatives()
    return np.column_stack([categories, ordinary & hard_negative, ordinary & ~hard_negative])


def fold_counts(manifest: Manifest, folds: np.ndarray, n_folds: int = DEFAULT_N_FOLDS) -> np.ndarray:
    """Int [n_folds, len(STRATA)]: how many photos of each stratum each fold holds."""
    counts = np.zeros((n_folds, len(STRATA)), dtype=np.int64)
    np.add.at(counts, np.asarray(folds), strata_membership(manifest).astype(np.int64))
    return counts


def split_units(manifest: Manifest, by: str = "group", keep_subgroups: Sequence[str] = ()) -> np.ndarray:
    """The name of each record's unit: its group, or (``by="source"``) its source unless the source
    is one of ``keep_subgroups``, whose groups stay separate units."""
    if by not in UNITS:
        raise ValueError(f"by must be one of {', '.join(UNITS)}, not {by!r}")
    groups = manifest.groups()
    if by == "group":
        return groups
    sources = manifest.sources()
    unknown = sorted(set(keep_subgroups) - set(sources.tolist()))
    if unknown:
        raise ManifestError(f"source(s) to keep split by group are not in the manifest: {', '.join(unknown)}")
    # "source:" and "group:" keep a source and a group of the same name apart.
    return np.where(np.isin(sources, list(keep_subgroups)), np.char.add("group:", groups),
                    np.char.add("source:", sources))


def assign_folds(
    manifest: Manifest,
    n_folds: int = DEFAULT_N_FOLDS,
    seed: int = DEFAULT_SEED,
    train_only: Sequence[str] = (),
    by: str = "group",
    keep_subgroups: Sequence[str] = (),
) -> np.ndarray:
    """Fold number (0..n_folds-1) of each record; every unit (group, or source: ``split_units``) lies
    wholly in one fold.

    Groups named in ``train_only`` get ``TRAIN_ONLY`` instead of a fold: they are always trained on,
    never validated. That is for a group that is the only example of its kind (see datasets/README.md):
    held out, it measures a gap no model trained on the rest can close, and kept out of training it
    would leave the shipped model without that kind.

    Greedy, in the spirit of scikit-learn's StratifiedGroupKFold: groups are placed largest first
    (big groups are the hard ones to balance; ties in size are ordered by a seeded hash of the
    group name), each into the fold where it leaves the smallest mean, over strata, of the spread
    across folds of that stratum's share. Equal choices go to the fold with fewer photos, then to a
    seeded fold order. The result depends only on the records' content, ``n_folds`` and ``seed``,
    not on row order, and never on Python's salted ``hash()``.
    """
    if n_folds < MIN_FOLDS:
        raise ValueError(f"n_folds must be at least {MIN_FOLDS}, not {n_folds}")
    groups = manifest.groups()
    unknown = sorted(set(train_only) - set(groups.tolist()))
    if unknown:
        raise ManifestError(f"train-only group(s) not in the manifest: {', '.join(unknown)}")
    pinned = np.isin(groups, list(train_only))
    if pinned.any():
        folds = np.full(len(manifest), TRAIN_ONLY, dtype=np.int64)
        rest = manifest.subset(np.flatnonzero(~pinned))
        folds[~pinned] = assign_folds(rest, n_folds, seed, by=by, keep_subgroups=keep_subgroups)
        return folds
    # np.unique sorts the names, which is what makes the result independent of row order.
    group_names, group_of_record = np.unique(split_units(manifest, by, keep_subgroups), return_inverse=True)
    group_strata = np.zeros((len(group_names), len(STRATA)), dtype=np.int64)
    np.add.at(group_strata, group_of_record, strata_membership(manifest).astype(np.int64))
    group_sizes = np.bincount(group_of_record, minlength=len(group_names))
    # A stratum with no photos contributes no spread; dividing by 1 keeps its shares at 0.
    stratum_totals = np.maximum(group_strata.sum(axis=0), 1)

    placement_order = sorted(
        range(len(group_names)),
        key=lambda group: (-group_sizes[group], _seeded_key(seed, f"group:{group_names[group]}")),
    )
    fold_preference = [_seeded_key(seed, f"fold:{fold}") for fold in range(n_folds)]
    fold_strata = np.zeros((n_folds, len(STRATA)), dtype=np.int64)
    fold_sizes = np.zeros(n_folds, dtype=np.int64)
    fold_of_group = np.zeros(len(group_names), dtype=np.int64)
    one_fold_each = np.eye(n_folds, dtype=np.int64)[:, :, None]
    for group in placement_order:
        # trials[f] = the fold table if this group went to fold f.
        trials = fold_strata[None, :, :] + one_fold_each * group_strata[group][None, None, :]
        spread = (trials / stratum_totals).std(axis=1).mean(axis=1)
        candidates = np.flatnonzero(spread <= spread.min() + SPREAD_TIE_TOLERANCE)
        fold = min(candidates, key=lambda f: (fold_sizes[f], fold_preference[f]))
        fold_of_group[group] = fold
        fold_strata[fold] += group_strata[group]
        fold_sizes[fold] += group_sizes[group]
    return fold_of_group[group_of_record]


def group_split(
    manifest: Manifest,
    val_fold: int = DEFAULT_VAL_FOLD,
    n_folds: int = DEFAULT_N_FOLDS,
    seed: int = DEFAULT_SEED,
    train_only: Sequence[str] = (),
    by: str = "group",
    keep_subgroups: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): fold ``val_fold`` of ``assign_folds`` validates.

    This is the split to report. Raises ManifestError when a side is empty or lacks a category.
    """
    if not 0 <= val_fold < n_folds:
        raise ValueError(f"val_fold must be in 0..{n_folds - 1}, not {val_fold}")
    folds = assign_folds(manifest, n_folds=n_folds, seed=seed, train_only=train_only, by=by,
                         keep_subgroups=keep_subgroups)
    is_val = folds == val_fold
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    _check_split(manifest, train_idx, val_idx, f"{by} split (fold {val_fold} of {n_folds}, seed {seed})")
    return train_idx, val_idx


def random_split(
    manifest: Manifest, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) drawn at random, ignoring groups.

    LEAKS: photos of one group (same source, same style) land on both sides, so the score it gives
    is an upper bound, not a result. Use it only to show the leakage gap beside ``group_split``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    shuffled = np.random.default_rng(seed).permutation(len(manifest))
    n_val = round(len(manifest) * val_fraction)
    train_idx, val_idx = np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])
    _check_split(manifest, train_idx, val_idx, f"random split ({val_fraction:g} validation, seed {seed})")
    return train_idx, val_idx


def _check_split(manifest: Manifest, train_idx: np.ndarray, val_idx: np.ndarray, description: str) -> None:
    # A side without a category can neither learn it nor measure it; say so instead of training anyway.
    labels = manifest.labels().astype(bool)
    for side, indices in (("training", train_idx), ("validation", val_idx)):
        if len(indices) == 0:
            raise ManifestError(f"{manifest.path}: {description}: the {side} side is empty")
        absent = [category for column, category in enumerate(CATEGORY_IDS) if not labels[indices, column].any()]
        if absent:
            raise ManifestError(
                f"{manifest.path}: {description}: the {side} side has no photo of {', '.join(absent)}"
            )


def _seeded_key(seed: int, text: str) -> int:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:SORT_KEY_BYTES], "big")
