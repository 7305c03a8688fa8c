"""The gathered batches (datasets/batches/*): complete provenance, and nothing from the hidden evaluation set.

The holdout guard (``../shared/holdout-guard/guard.py``) checks every batch's sources and, where the
photos are on this machine, every photo; without ``../shared`` that part skips. The photos themselves
are not in the repository (datasets/README.md says why and where they are kept).
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BATCHES = sorted((ROOT / "datasets" / "batches").glob("*/manifest.csv"))
GUARD = ROOT.parent / "shared" / "holdout-guard" / "guard.py"
PROVENANCE = ("source_repo", "source_path", "source_commit", "license")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
TIMEOUT_S = 600


def test_there_are_batches():
    assert BATCHES, "no gathered batch under datasets/batches"


@pytest.mark.parametrize("manifest", BATCHES, ids=lambda path: path.parent.name)
def test_every_photo_has_its_provenance(manifest):
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{manifest} is empty"
    for row in rows:
        missing = [column for column in PROVENANCE if not row.get(column)]
        assert not missing, f"{row['path']}: no {', '.join(missing)}"
        assert COMMIT.match(row["source_commit"]), f"{row['path']}: source_commit {row['source_commit']!r}"
    assert len({row["path"] for row in rows}) == len(rows), "a photo is listed twice"


@pytest.mark.skipif(not GUARD.is_file(), reason="../shared/holdout-guard is not on this machine")
@pytest.mark.parametrize("manifest", BATCHES, ids=lambda path: path.parent.name)
def test_the_holdout_guard_passes_every_batch(manifest):
    checked = subprocess.run([sys.executable, str(GUARD), "manifest", str(manifest)], capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.rstrip().endswith("0 match"), checked.stdout
