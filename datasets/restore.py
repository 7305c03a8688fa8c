"""Rebuild a batch's photos from its manifest: the source's git snapshot, at the recorded commit and path.

A batch's photos are kept out of git (datasets/gather.py says why), so a fresh checkout, a new machine or
a lost disk has manifests and no photos, and ``make model`` cannot train. Each manifest row records
where its photo came from (``source_repo``, ``source_commit``, ``source_path``) and what it looked like
(``dhash``, taken when it was gathered). That is enough to make the photo again: read the file out of
the source's snapshot, check that it is the same photo, and store it as ``add`` did (upright, then
``gather.store_photo``).

The check matters: a snapshot can be newer than the recorded commit (a shallow store keeps only its
newest commit), and a file under the same path may since have been replaced. A photo whose hash is
more than ``NEAR_DUPLICATE_BITS`` from the recorded one is not the labelled photo and is not restored.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .gather import GatherError, _git, _read_rows, batch_dir, batch_manifests, source_slug, store_photo
from .near_duplicates import NEAR_DUPLICATE_BITS, dhash, hamming, open_upright, progress

# Where `fetch` puts a snapshot: <mirror>/<owner+name>/ holding repo/.git (a clone with a work tree)
# or repo/ (a bare git directory).
SNAPSHOT_GIT_DIRS = ("repo/.git", "repo")


@dataclass
class RestoreReport:
    """What a restore did, photo by photo, and the sources still needed (with how many photos each)."""

    restored: int = 0
    present: int = 0
    not_fetched: Counter = field(default_factory=Counter)
    not_in_snapshot: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return sum(self.not_fetched.values()) + len(self.not_in_snapshot) + len(self.changed)


def snapshot_git_dir(mirror: Path, source: str) -> Path | None:
    """The git directory of ``source``'s snapshot under ``mirror``, or None when it was not fetched."""
    for inside in SNAPSHOT_GIT_DIRS:
        candidate = mirror / source_slug(source) / inside
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    return None


def _blob(git_dir: Path, commit: str, path: str) -> bytes | None:
    """The file at ``commit`` or, when the snapshot lacks that commit, at its newest one (then the hash
    check decides whether it is still the same photo)."""
    for revision in (commit, "HEAD"):
        try:
            return _git(git_dir, "cat-file", "blob", f"{revision}:{path}")
        except subprocess.CalledProcessError:
            continue
    return None


def _store(image: Image.Image, target: Path) -> None:
    """As ``add`` stores a candidate, written beside the target and renamed over: a crash leaves no half file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.tmp"
    store_photo(image, partial)
    partial.replace(target)


def restore(mirror: Path, batches: Sequence[str] = ()) -> RestoreReport:
    """Make every missing photo of ``batches`` (all batches when empty) again from the snapshots under ``mirror``."""
    manifests = [batch_dir(name) / "manifest.csv" for name in batches] or batch_manifests()
    absent = [m for m in manifests if not m.is_file()]
    if absent:
        raise GatherError(f"no batch manifest at {', '.join(map(str, absent))}")
    report = RestoreReport()
    wanted = []
    for manifest in manifests:
        for row in _read_rows(manifest):
            if (manifest.parent / row["path"]).is_file():
                report.present += 1
            else:
                wanted.append((manifest.parent, row))
    git_dirs: dict[str, Path | None] = {}
    for folder, row in progress(wanted, "restoring photos"):
        source = row["source_repo"]
        if source not in git_dirs:
            git_dirs[source] = snapshot_git_dir(mirror, source)
        git_dir = git_dirs[source]
        where = f"{folder.name}/{row['path']}"
        if git_dir is None:
            report.not_fetched[source] += 1
            continue
        data = _blob(git_dir, row["source_commit"], row["source_path"])
        if data is None:
            report.not_in_snapshot.append(f"{where} ({source}:{row['source_path']})")
            continue
        try:
            image = open_upright(data)
        except Exception:  # a file that no longer decodes is not the labelled photo; say so, go on
            report.changed.append(f"{where} (no longer decodes)")
            continue
        recorded = np.frombuffer(bytes.fromhex(row["dhash"]), dtype=np.uint8)
        distance = int(hamming(recorded[None, :], dhash(image))[0])
        if distance > NEAR_DUPLICATE_BITS:
            report.changed.append(f"{where} ({distance} bits from the labelled photo)")
            continue
        _store(image, folder / row["path"])
        report.restored += 1
    return report
