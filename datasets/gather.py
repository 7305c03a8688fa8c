"""Gather labelled photo batches from public sources, with provenance, deduplication and the guard.

The model fails on photo sources it has never seen (models/MODEL_CARD.md), so the data team keeps
adding batches from many new sources. Doing that by hand loses provenance, lets near-duplicates of
training photos leak into validation, and risks taking photos from the hidden evaluation set. This
module is the one path photos take into a batch:

1. ``candidates``: list a source's photos (a git directory of a public repository), decode each one,
   drop the small and the already-known (``near_duplicates``), and draw numbered contact sheets
   (``contact_sheets``) to look at;
2. ``add``: copy the chosen candidates, by number, into a batch under one label, shrunk to at most
   ``STORED_SIDE`` px and re-encoded, with a manifest row that records repository, commit, path and
   licence as found;
3. ``remove``: take photos back out, with the reason written to the batch's ``removed.csv``.

A batch is ``datasets/batches/<batch>/manifest.csv`` (committed: labels and provenance) plus
``images/`` beside it (git-ignored: most sources carry no licence to redistribute, so the photos stay
out of the repository, as ``../shared/flexdata``'s do). The manifest has flexdata's columns plus
``source_commit`` and ``dhash``, and loads with :func:`flexguard.datasets.load_manifest`.
``restore.py`` makes a checkout's missing photos again from that provenance.

A little over 300 lines: the three steps share the batch's layout and its crash-safe writes, and
read best together.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from flexguard.models.taxonomy import CATEGORY_IDS, ORDINARY

from .contact_sheets import batch_sheets, draw_sheets
from .manifest import IMAGE_SUFFIXES, ManifestError
from .near_duplicates import HashIndex, dhash, known_photos, open_upright, progress

# Stored photos: at most 384 px on the longest side, JPEG quality 85 (issue #11's data format; about
# 25 KB a photo, so 10,000 photos stay near 250 MB).
STORED_SIDE = 384
STORED_QUALITY = 85
# Smaller photos are icons, thumbnails or logos, not the photos people post (GATHERING.md).
MIN_SHORT_SIDE = 200
# Files under 8 KB are icons and placeholders; skipping them saves decoding thousands of sprites.
MIN_FILE_BYTES = 8 * 1024
# Decoding a huge scan or panorama to look at it is wasted work.
MAX_FILE_BYTES = 30 * 1024 * 1024
# One source should not set the style of a category (GATHERING.md: 30-40 per repository at most).
PHOTOS_PER_SOURCE_WARNING = 40
# Candidate captions: the number, then as much of the file name as fits under a tile.
CAPTION_NAME_CHARS = 18
# A stored photo's name keeps this much of its file name, and this much of a hash of its whole path.
STEM_CHARS = 40
NAME_HASH_CHARS = 8

BATCHES_DIR = Path(__file__).resolve().parent / "batches"
GUARD = Path(__file__).resolve().parent.parent.parent / "shared" / "holdout-guard" / "guard.py"

MANIFEST_COLUMNS = (
    "path", "category", "label", "hard_negative", "source_repo", "group",
    "source_path", "source_commit", "license", "dhash",
)
CANDIDATE_COLUMNS = ("index", "source_path", "width", "height", "dhash", "duplicate_of")
REMOVED_COLUMNS = ("path", "category", "source_repo", "source_path", "reason")
LICENSE_NAMES = re.compile(r"^(licen[cs]e|copying|unlicense)(\.[a-z]+)?$", re.IGNORECASE)


class GatherError(ManifestError):
    """A gathering step that cannot go ahead; the message says what to do instead."""


def batch_manifests() -> list[Path]:
    return sorted(BATCHES_DIR.glob("*/manifest.csv"))


def known(reference_manifests: Sequence[Path]) -> HashIndex:
    """Every photo already in the data: the reference manifests (flexdata's) and every batch's."""
    return known_photos([*reference_manifests, *batch_manifests()])


def gathered_sources(reference_manifests: Sequence[Path], include_batches: bool = True) -> dict[str, str]:
    """Sources (lower-case) already in the reference manifests (or a batch), and where."""
    found: dict[str, str] = {}
    batches = batch_manifests() if include_batches else []
    for manifest in [*reference_manifests, *batches]:
        for row in _read_rows(manifest):
            found.setdefault(row.get("source_repo", "").lower(), str(manifest))
    return found


# ---------------------------------------------------------------------------------------------
# Sources: a git directory of a public repository.


def _git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True).stdout


@dataclass(frozen=True)
class Blob:
    path: str
    sha: str
    size: int


def source_blobs(git_dir: Path, under: str = "") -> Iterator[Blob]:
    """Image files in the source's newest commit, with their sizes, in path order.

    Snapshots lack files of 4 MiB and more (and Git LFS content): such a blob is missing from the
    object store, and is skipped here rather than failing the whole listing.
    """
    listing = _git(git_dir, "ls-tree", "-r", "-z", "HEAD", *([under] if under else []))
    images = []
    for entry in listing.split(b"\0"):
        meta, _, path = entry.decode("utf-8", "replace").partition("\t")
        if meta and meta.split()[1] == "blob" and Path(path).suffix.lower() in IMAGE_SUFFIXES:
            images.append((path, meta.split()[2]))
    if not images:
        return
    # One `git cat-file --batch-check` for all sizes: "<sha> blob <size>", or "<sha> missing".
    checked = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "--batch-check"], check=True,
                             input="".join(f"{sha}\n" for _, sha in images).encode(), capture_output=True).stdout
    for (path, sha), line in zip(images, checked.decode().splitlines(), strict=True):
        fields = line.split()
        if len(fields) == 3 and fields[1] == "blob":
            yield Blob(path, sha, int(fields[2]))


def source_license(git_dir: Path) -> str:
    """The first line of the repository's licence file as found, or ``none found``.

    Template sites often keep their terms in a ``license/`` folder rather than a file: then the first
    file in it is read, and named with its folder, so a tree listing is never recorded as a licence.
    """
    for line in _git(git_dir, "ls-tree", "HEAD").decode("utf-8", "replace").splitlines():
        info, _, name = line.partition("\t")
        kind = info.split()[1]
        if not LICENSE_NAMES.match(name):
            continue
        if kind == "tree":
            inside = _git(git_dir, "ls-tree", "--name-only", f"HEAD:{name}").decode("utf-8", "replace").splitlines()
            if not inside:
                continue
            name = f"{name}/{inside[0]}"
        elif kind != "blob":
            continue
        text = _git(git_dir, "show", f"HEAD:{name}").decode("utf-8", "replace").strip()
        first = next((row.strip() for row in text.splitlines() if row.strip()), "")
        return f"{name}: {first[:80]}"
    return "none found"


def _guard(verb: str, *arguments: str) -> subprocess.CompletedProcess:
    if not GUARD.is_file():
        raise GatherError(f"holdout guard not found at {GUARD}: nothing is gathered without it")
    return subprocess.run([sys.executable, str(GUARD), verb, *arguments], capture_output=True, text=True)


def check_source(source: str) -> None:
    """Refuse a source that the holdout guard names."""
    result = _guard("source", source)
    if result.returncode != 0:
        raise GatherError(f"{source}: the holdout guard refuses it: {result.stdout.strip()}")


def check_photos(paths: Sequence[Path]) -> None:
    """Refuse photos the holdout guard matches to the hidden set (a source it does not name may still
    hold copies of the set's photos: stock images travel between sites)."""
    result = _guard("photos", *map(str, paths))
    if result.returncode != 0:
        matched = [line for line in result.stdout.splitlines() if "do not use" in line]
        raise GatherError(f"the holdout guard matches {len(matched)} of them; leave them out: " + "; ".join(matched))


def source_slug(source: str) -> str:
    return source.replace("/", "+")


# ---------------------------------------------------------------------------------------------
# Candidates and contact sheets.


@dataclass
class CandidateSet:
    folder: Path
    kept: int
    skipped_small: int
    skipped_unreadable: int
    duplicates: int
    license: str
    commit: str
    sheets: list[Path]


def candidates(source: str, git_dir: Path, work_dir: Path, *, under: str = "",
               reference_manifests: Sequence[Path] = ()) -> CandidateSet:
    """Decode a source's photos into ``work_dir/<owner+name>/``: numbered candidates and sheets.

    Each kept photo is saved as ``<index>.jpg`` (at STORED_SIDE) with a row in ``candidates.csv``;
    near-duplicates of known photos or of an earlier candidate are listed with ``duplicate_of`` and
    left off the sheets.
    """
    check_source(source)
    # A source already in the reference data is refused; one in a batch may be looked at again
    # (``add`` still refuses photos that are already in the data).
    already = gathered_sources(reference_manifests, include_batches=False)
    if source.lower() in already:
        raise GatherError(f"{source} is already gathered in {already[source.lower()]}: pick a new source")
    folder = work_dir / source_slug(source)
    folder.mkdir(parents=True, exist_ok=True)
    # A rerun starts clean: numbers and sheets from an earlier run must not be mistaken for this one's.
    for old in [*folder.glob("*.jpg"), *folder.glob("sheet-*.png")]:
        old.unlink()
    commit = _git(git_dir, "rev-parse", "HEAD").decode().strip()
    license_found = source_license(git_dir)
    index = known(reference_manifests)
    blobs = [b for b in source_blobs(git_dir, under) if MIN_FILE_BYTES <= b.size <= MAX_FILE_BYTES]
    rows, tiles = [], []
    small = unreadable = duplicates = 0
    for blob in progress(blobs, f"decoding {source}"):
        try:
            image = open_upright(_git(git_dir, "cat-file", "blob", blob.sha))
        except Exception:  # a broken or unsupported file is a reason to skip it, not to stop
            unreadable += 1
            continue
        if min(image.size) < MIN_SHORT_SIDE:
            small += 1
            continue
        probe = dhash(image)
        number = len(rows)
        duplicate_of = index.duplicate_of(probe)
        index.add(probe, f"candidate {number} of {source}")
        rows.append({"index": number, "source_path": blob.path, "width": image.width, "height": image.height,
                     "dhash": probe.tobytes().hex(), "duplicate_of": duplicate_of})
        if duplicate_of:
            duplicates += 1
            continue
        store_photo(image, folder / f"{number}.jpg")
        tiles.append((image, f"{number}  {Path(blob.path).name[:CAPTION_NAME_CHARS]}"))
    with (folder / "candidates.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, CANDIDATE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "source.txt").write_text(f"source={source}\ncommit={commit}\nlicense={license_found}\n",
                                       encoding="utf-8")
    sheets = draw_sheets(tiles, folder, "sheet-")
    return CandidateSet(folder, len(tiles), small, unreadable, duplicates, license_found, commit, sheets)


def store_photo(image: Image.Image, path: Path) -> None:
    """Shrink ``image`` (in place) to at most STORED_SIDE px and write it as a batch stores its photos."""
    image.thumbnail((STORED_SIDE, STORED_SIDE), Image.LANCZOS)
    image.save(path, format="JPEG", quality=STORED_QUALITY)


def parse_indices(texts: Iterable[str]) -> list[int]:
    """``["3", "5-7", "10"]`` -> ``[3, 5, 6, 7, 10]``."""
    indices: list[int] = []
    for text in texts:
        for part in text.split(","):
            if not part:
                continue
            first, dash, last = part.partition("-")
            if not (first.isdigit() and (not dash or last.isdigit())):
                raise GatherError(f"not a candidate number or range: {part!r} (use 3, 5-7)")
            indices.extend(range(int(first), int(last if dash else first) + 1))
    return indices


# ---------------------------------------------------------------------------------------------
# Batches.


def batch_dir(batch: str) -> Path:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", batch):
        raise GatherError(f"batch name {batch!r}: use lower-case letters, digits and dashes")
    return BATCHES_DIR / batch


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, columns: Sequence[str], rows: list[dict[str, str]]) -> None:
    """Write the whole CSV to a temporary file, then rename it over: a crash leaves the old one."""
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def _source_info(candidate_folder: Path) -> dict[str, str]:
    text = (candidate_folder / "source.txt").read_text(encoding="utf-8")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def photo_name(source: str, source_path: str) -> str:
    """The stored file's name: readable (source and file stem) and unique (a hash of the whole path,
    since two folders of one source may hold files of the same name)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(source_path).stem)[:STEM_CHARS]
    digest = hashlib.sha256(f"{source}:{source_path}".encode()).hexdigest()[:NAME_HASH_CHARS]
    return f"{source_slug(source)}__{stem}_{digest}.jpg"


def add(batch: str, candidate_folder: Path, category: str, indices: Sequence[int], *,
        hard_negative: bool = False, group: str = "", reference_manifests: Sequence[Path] = ()) -> list[str]:
    """Copy candidates into ``batch`` under ``category``; returns the new manifest paths.

    Refuses (adding nothing) an unknown category, ``hard_negative`` on a luxury category, an index that
    is not a candidate, and a candidate that is a near-duplicate of a photo already in the data.
    """
    categories = category.split(";")
    if any(c not in (*CATEGORY_IDS, ORDINARY) for c in categories) or (ORDINARY in categories and len(categories) > 1):
        raise GatherError(f"category {category!r}: use one of {', '.join((*CATEGORY_IDS, ORDINARY))} (or a;b)")
    if hard_negative and category != ORDINARY:
        raise GatherError("--hard-negative is for ordinary photos that look like luxury")
    info = _source_info(candidate_folder)
    source = info["source"]
    by_index = {int(row["index"]): row for row in _read_rows(candidate_folder / "candidates.csv")}
    missing = [i for i in indices if i not in by_index or by_index[i]["duplicate_of"]]
    if missing:
        raise GatherError(f"not candidates of {source} (unknown, or duplicates): {missing}")
    folder = batch_dir(batch)
    manifest_path = folder / "manifest.csv"
    rows = _read_rows(manifest_path)
    taken = {row["source_path"] for row in rows if row["source_repo"] == source}
    index = known(reference_manifests)
    new_rows = []
    for number in indices:
        candidate = by_index[number]
        if candidate["source_path"] in taken:
            raise GatherError(f"candidate {number} ({candidate['source_path']}) is already in {batch}")
        probe = np.frombuffer(bytes.fromhex(candidate["dhash"]), dtype=np.uint8)
        duplicate_of = index.duplicate_of(probe)
        if duplicate_of:
            raise GatherError(f"candidate {number} is a near-duplicate of {duplicate_of}")
        index.add(probe, f"candidate {number}")
        relative = Path("images") / categories[0] / photo_name(source, candidate["source_path"])
        new_rows.append({
            "path": relative.as_posix(), "category": category,
            "label": "0" if category == ORDINARY else "1", "hard_negative": "1" if hard_negative else "0",
            "source_repo": source, "group": group or source, "source_path": candidate["source_path"],
            "source_commit": info["commit"], "license": info["license"], "dhash": candidate["dhash"],
        })
    check_photos([candidate_folder / f"{number}.jpg" for number in indices])
    for number, row in zip(indices, new_rows, strict=True):
        target = folder / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / f".{target.name}.tmp").write_bytes((candidate_folder / f"{number}.jpg").read_bytes())
        (target.parent / f".{target.name}.tmp").replace(target)
    _write_rows(manifest_path, MANIFEST_COLUMNS, rows + new_rows)
    total = sum(1 for row in rows + new_rows if row["source_repo"] == source)
    if total > PHOTOS_PER_SOURCE_WARNING:
        print(f"warning: {total} photos from {source} in {batch}; {PHOTOS_PER_SOURCE_WARNING} is plenty",
              file=sys.stderr)
    return [row["path"] for row in new_rows]


def remove(batch: str, paths: Sequence[str], reason: str) -> int:
    """Take photos out of a batch (by manifest path or file name), recording why in removed.csv."""
    if not reason.strip():
        raise GatherError("say why the photos are removed (--reason)")
    folder = batch_dir(batch)
    rows = _read_rows(folder / "manifest.csv")
    wanted = set(paths)
    gone = [row for row in rows if row["path"] in wanted or Path(row["path"]).name in wanted]
    found = {row["path"] for row in gone} | {Path(row["path"]).name for row in gone}
    unknown = sorted(wanted - found)
    if unknown:
        raise GatherError(f"not in {batch}: {', '.join(unknown[:5])}")
    _write_rows(folder / "manifest.csv", MANIFEST_COLUMNS, [row for row in rows if row not in gone])
    removed = _read_rows(folder / "removed.csv")
    _write_rows(folder / "removed.csv", REMOVED_COLUMNS, removed + [{**row, "reason": reason} for row in gone])
    for row in gone:
        (folder / row["path"]).unlink(missing_ok=True)
    return len(gone)


def relabel(batch: str, paths: Sequence[str], category: str, *, hard_negative: bool = False) -> int:
    """Change the label of photos already in a batch (and move their files to the new category)."""
    folder = batch_dir(batch)
    rows = _read_rows(folder / "manifest.csv")
    wanted = set(paths)
    changed = 0
    for row in rows:
        if row["path"] in wanted or Path(row["path"]).name in wanted:
            old = folder / row["path"]
            new_relative = Path("images") / category.split(";")[0] / Path(row["path"]).name
            (folder / new_relative).parent.mkdir(parents=True, exist_ok=True)
            old.replace(folder / new_relative)
            row.update(path=new_relative.as_posix(), category=category,
                       label="0" if category == ORDINARY else "1", hard_negative="1" if hard_negative else "0")
            changed += 1
    if changed != len(wanted):
        raise GatherError(f"{len(wanted) - changed} of the names are not in {batch}")
    _write_rows(folder / "manifest.csv", MANIFEST_COLUMNS, rows)
    return changed


def sheets(batch: str, out_dir: Path, model: Path | None = None) -> list[Path]:
    """Contact sheets of a batch, one run per label, sorted by ``model``'s risk when given."""
    manifest = batch_dir(batch) / "manifest.csv"
    if not manifest.is_file():
        raise GatherError(f"no batch {batch!r} (no {manifest})")
    return batch_sheets(manifest, out_dir, model)
