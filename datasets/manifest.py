"""Read and write the CSV manifests that say which photo shows what.

Training and evaluation must agree on exactly which photos they used and what each one is labelled,
and a model must be traceable to its data; so every data set is a CSV manifest, checked strictly on
load (a bad row stops the run with the file and line named, instead of silently training on it), and
hashed (the hash goes into the model's metadata as ``data_manifest_sha256``).

Manifest format — one row per photo, UTF-8 CSV with a header row:

``path`` (required)
    The image file, relative to the manifest's folder, or absolute.
``category`` (required)
    One or more category ids from ``flexguard.models.taxonomy.CATEGORY_IDS`` separated by ``;``
    (e.g. ``luxury_car;jewelry_watch``), or ``ordinary`` for a photo that shows none of them.
``group`` (optional)
    Photos likely to share a photo style (same source, same shoot, same catalogue) share a group;
    splits keep each group on one side. Default: the ``path`` text, so each photo is its own group.
``hard_negative`` (optional)
    ``1`` for an ordinary photo that looks like a luxury category, else ``0`` (the default).
``source_repo`` (optional)
    Where the photo came from, for per-source reports. Default: the part of ``group`` before the
    first ``:`` (so ``chrono24:rolex`` belongs to source ``chrono24``).

Other columns (``label``, ``source_path``, ``license``, ...) are ignored. A folder of manifests may
hold extra batches beside the main one as ``manifest*.csv``; passing the folder loads them all.

A little over 300 lines because the format's checks (each with its own clear message) belong
with the reader that enforces them.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexguard.models.taxonomy import CATEGORY_IDS, ORDINARY

PATH_COLUMN = "path"
CATEGORY_COLUMN = "category"
GROUP_COLUMN = "group"
HARD_NEGATIVE_COLUMN = "hard_negative"
SOURCE_COLUMN = "source_repo"
REQUIRED_COLUMNS = (PATH_COLUMN, CATEGORY_COLUMN)

CATEGORY_SEPARATOR = ";"
# A group such as "stanford-cars:Ferrari" names its source before this mark.
GROUP_SOURCE_SEPARATOR = ":"
TRUE_FLAG, FALSE_FLAG = "1", "0"

# A folder passed instead of a file stands for every batch in it, loaded in name order.
MANIFEST_GLOB = "manifest*.csv"
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".gif", ".tif", ".tiff"}
)
# Enough missing files to see the pattern (a wrong folder, a renamed batch) without a wall of text.
MISSING_FILES_SHOWN = 3
# A manifest with this column is a gathered batch, whose photos are kept out of git and can be made again.
PROVENANCE_COLUMN = "source_commit"
# Column errors point at the header row, the CSV's first line.
HEADER_LINE = 1

GROUP_BY_FOLDER = "folder"
GROUP_BY_PHOTO = "photo"


class ManifestError(ValueError):
    """A manifest (or a split of one) that cannot be trusted for training or evaluation."""


@dataclass(frozen=True)
class Record:
    """One labelled photo."""

    path: Path  # absolute
    categories: tuple[str, ...]  # in CATEGORY_IDS order; empty = ordinary
    group: str
    source: str
    hard_negative: bool

    @property
    def is_flex(self) -> bool:
        return bool(self.categories)


@dataclass
class Manifest:
    """Labelled photos plus the identity of the manifest file(s) they came from.

    ``path`` is the manifest file, or the folder when a folder (or several files) was loaded;
    ``sha256`` identifies the exact manifest bytes and is recorded in model metadata.
    """

    path: Path
    records: list[Record]
    sha256: str

    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> np.ndarray:
        """Multi-hot float32 targets, shape [N, len(CATEGORY_IDS)], columns in CATEGORY_IDS order."""
        labels = np.zeros((len(self.records), len(CATEGORY_IDS)), dtype=np.float32)
        column_of = {category: column for column, category in enumerate(CATEGORY_IDS)}
        for row, record in enumerate(self.records):
            for category in record.categories:
                labels[row, column_of[category]] = 1.0
        return labels

    def subset(self, indices: Sequence[int] | np.ndarray) -> Manifest:
        """The records at ``indices`` (integer positions or a boolean mask), same path and hash."""
        positions = np.asarray(indices)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        return Manifest(self.path, [self.records[int(i)] for i in positions], self.sha256)

    def is_flex(self) -> np.ndarray:
        return np.array([record.is_flex for record in self.records], dtype=bool)

    def groups(self) -> np.ndarray:
        return np.array([record.group for record in self.records], dtype=str)

    def sources(self) -> np.ndarray:
        return np.array([record.source for record in self.records], dtype=str)

    def hard_negatives(self) -> np.ndarray:
        return np.array([record.hard_negative for record in self.records], dtype=bool)


def load_manifest(path: str | os.PathLike[str], *, check_files: bool = True) -> Manifest:
    """Load one manifest CSV, or every ``manifest*.csv`` in a folder.

    ``check_files`` verifies that every image exists; turn it off only for tools that never open
    the images (e.g. hashing or inspecting a manifest on a machine without the photos).
    """
    return load_manifests([path], check_files=check_files)


def load_manifests(
    paths: Iterable[str | os.PathLike[str]], *, check_files: bool = True
) -> Manifest:
    """Load and concatenate several manifests (files or folders of ``manifest*.csv``).

    A photo listed twice, even in different manifests, is an error: it would be counted twice and
    could land on both sides of a split. ``sha256`` is the file's own hash when only one file is
    read (so it matches ``sha256sum manifest.csv``), else the sha256 of the files' hex hashes
    joined by newlines, in load order.
    """
    given = [Path(p) for p in paths]
    files = _expand_manifest_paths(given)
    records: list[Record] = []
    hashes: list[str] = []
    first_seen: dict[Path, str] = {}  # image path -> "file:line" that listed it first
    for file in files:
        file_records, file_hash = _read_manifest_file(file, first_seen, check_files=check_files)
        records.extend(file_records)
        hashes.append(file_hash)
    if len(files) == 1:
        sha256 = hashes[0]
    else:
        sha256 = hashlib.sha256("\n".join(hashes).encode("ascii")).hexdigest()
    if len(given) == 1:
        manifest_path = given[0]
    else:
        manifest_path = Path(os.path.commonpath([str(file.absolute()) for file in files]))
    return Manifest(path=manifest_path, records=records, sha256=sha256)


def import_folder(
    root: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    *,
    group_by: str = GROUP_BY_FOLDER,
) -> Manifest:
    """Write a manifest for a folder-per-category layout and load it.

    Layout: ``root/<category>/**/<image>``, where ``<category>`` is a category id or ``ordinary``.
    ``group_by="folder"`` (default): a photo inside a sub-folder gets that first sub-folder's name
    as its group (``luxury_car/dealer_x/a.jpg`` -> ``dealer_x``), so a source filed under several
    categories stays in one group and never straddles a split; a photo lying directly in a category
    folder is its own group, since nothing says which photos it shares a style with.
    ``group_by="photo"``: every photo is its own group. Paths are written relative to the CSV's
    folder; all photos get ``hard_negative`` 0 (edit the CSV to mark hard negatives).
    """
    if group_by not in (GROUP_BY_FOLDER, GROUP_BY_PHOTO):
        raise ValueError(f"group_by must be {GROUP_BY_FOLDER!r} or {GROUP_BY_PHOTO!r}, not {group_by!r}")
    root = Path(root)
    out_csv = Path(out_csv)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a folder")
    known = (*CATEGORY_IDS, ORDINARY)
    rows: list[tuple[str, str, str]] = []
    for image in sorted(_images_under(root)):
        relative = image.relative_to(root)
        if len(relative.parts) < 2:
            raise ManifestError(
                f"{image}: image outside a category folder; put it in one of {', '.join(known)}"
            )
        category, *inner = relative.parts
        if category not in known:
            raise ManifestError(
                f"{root / category}: folder name is not a category; known: {', '.join(known)}"
            )
        csv_path = Path(os.path.relpath(image.absolute(), out_csv.absolute().parent)).as_posix()
        nested = len(inner) > 1
        group = inner[0] if group_by == GROUP_BY_FOLDER and nested else csv_path
        rows.append((csv_path, category, group))
    if not rows:
        raise ManifestError(f"{root}: no images found in category folders")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow((PATH_COLUMN, CATEGORY_COLUMN, GROUP_COLUMN, HARD_NEGATIVE_COLUMN))
        writer.writerows((*row, FALSE_FLAG) for row in rows)
    return load_manifest(out_csv)


def _images_under(root: Path) -> Iterable[Path]:
    for candidate in root.rglob("*"):
        # Dot-files such as macOS "._photo.jpg" carry an image suffix but are not images.
        if candidate.name.startswith("."):
            continue
        if candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.is_file():
            yield candidate


def _expand_manifest_paths(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            batches = sorted(path.glob(MANIFEST_GLOB))
            if not batches:
                raise ManifestError(f"{path}: no {MANIFEST_GLOB} in this folder")
            files.extend(batches)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: manifest file not found")
    if not files:
        raise ManifestError("no manifest given")
    return files


def _read_manifest_file(
    file: Path, first_seen: dict[Path, str], *, check_files: bool
) -> tuple[list[Record], str]:
    raw = file.read_bytes()
    file_hash = hashlib.sha256(raw).hexdigest()
    folder = file.absolute().parent
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would corrupt "path".
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{file}: not UTF-8 text ({error})") from None
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = reader.fieldnames or []
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise ManifestError(
                f"{file}:{HEADER_LINE}: missing required column {column!r} (header: {','.join(header)})"
            )
    records: list[Record] = []
    missing: list[str] = []
    for row in reader:
        where = f"{file}:{reader.line_num}"
        record = _parse_row(row, folder, where)
        if record.path in first_seen:
            raise ManifestError(
                f"{where}: duplicate path {row[PATH_COLUMN]!r}, already listed at {first_seen[record.path]}"
            )
        first_seen[record.path] = where
        if check_files and not record.path.is_file():
            missing.append(f"{where} {record.path}")
        records.append(record)
    if not records:
        raise ManifestError(f"{file}: empty manifest (no rows after the header)")
    if missing:
        hint = (" (a gathered batch keeps its photos out of git: `flexguard data restore` makes them again "
                "from the sources' snapshots)" if PROVENANCE_COLUMN in header else "")
        raise ManifestError(
            f"{file}: {len(missing)} of {len(records)} image files missing, first: "
            + "; ".join(missing[:MISSING_FILES_SHOWN]) + hint
        )
    return records, file_hash


def _parse_row(row: dict[str, str | None], folder: Path, where: str) -> Record:
    def cell(column: str) -> str:
        # A short row yields None for the columns it lacks; treat those like empty cells.
        return (row.get(column) or "").strip()

    path_text = cell(PATH_COLUMN)
    if not path_text:
        raise ManifestError(f"{where}: empty path")
    # normpath, not resolve(): resolving symlinks would make two names of one file look distinct
    # only sometimes, and would tie records to the machine's link layout.
    path = Path(os.path.normpath(folder / path_text))
    categories = _parse_categories(cell(CATEGORY_COLUMN), where)
    hard_negative = _parse_flag(cell(HARD_NEGATIVE_COLUMN), HARD_NEGATIVE_COLUMN, where)
    if hard_negative and categories:
        raise ManifestError(
            f"{where}: hard_negative=1 on a photo labelled {CATEGORY_SEPARATOR.join(categories)}; "
            f"hard negatives must be {ORDINARY}"
        )
    group = cell(GROUP_COLUMN) or path_text
    source = cell(SOURCE_COLUMN) or group.split(GROUP_SOURCE_SEPARATOR, 1)[0]
    return Record(path=path, categories=categories, group=group, source=source, hard_negative=hard_negative)


def _parse_categories(text: str, where: str) -> tuple[str, ...]:
    names = {name.strip() for name in text.split(CATEGORY_SEPARATOR) if name.strip()}
    if not names:
        raise ManifestError(f"{where}: empty category; use {ORDINARY!r} for a photo with none")
    unknown = sorted(names - set(CATEGORY_IDS) - {ORDINARY})
    if unknown:
        raise ManifestError(
            f"{where}: unknown category {', '.join(map(repr, unknown))}; "
            f"known: {', '.join((*CATEGORY_IDS, ORDINARY))}"
        )
    if ORDINARY in names and len(names) > 1:
        raise ManifestError(
            f"{where}: {ORDINARY!r} combined with a category ({text!r}); ordinary means none of them"
        )
    return tuple(category for category in CATEGORY_IDS if category in names)


def _parse_flag(text: str, column: str, where: str) -> bool:
    if text in ("", FALSE_FLAG):
        return False
    if text == TRUE_FLAG:
        return True
    raise ManifestError(f"{where}: {column} must be {FALSE_FLAG} or {TRUE_FLAG}, not {text!r}")
