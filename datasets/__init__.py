"""Labelled photo sets for training and validating flexguard: manifests and honest splits.

Kept apart from training so that evaluation, reports and tools read the same manifests, with the
same checks and the same split, without importing torch.
"""

from .manifest import Manifest, ManifestError, Record, import_folder, load_manifest, load_manifests
from .splits import STRATA, TRAIN_ONLY, assign_folds, fold_counts, group_split, random_split, strata_membership

__all__ = [
    "STRATA",
    "TRAIN_ONLY",
    "Manifest",
    "ManifestError",
    "Record",
    "assign_folds",
    "fold_counts",
    "group_split",
    "import_folder",
    "load_manifest",
    "load_manifests",
    "random_split",
    "strata_membership",
]
