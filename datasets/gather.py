"""Gather labelled photo batches from public sources, with provenance, deduplication and the guard.

The model fails on photo sources it has never seen (models/MODEL_CARD.md), so the data team keeps
adding batches from many new sources. Doing that by hand loses provenance, lets near-duplicates of
training photos leak into validation, and risks taking photos from the hidden evaluation set. This
module is the one path photos take into a batch:

1. ``candidates``: list a source's photos (a git directory of a public repository), decode each one,
   drop the small and the already-known (perceptual hash), and draw numbered contact sheets to look at;
2. ``add``: copy the chosen candidates, by number, into a batch under one label, shrunk to at most
   ``STORED_SIDE`` px and re-encoded, with a manifest row that records repository, commit, path and
   licence as found;
3. ``remove``: take photos back out, with the reason written to the batch's ``removed.csv``.

A batch is ``datasets/batches/<batch>/manifest.csv`` (committed: labels and provenance) plus
``images/`` beside it (git-ignored: most sources carry no licence to redistribute, so the photos stay
out of the repository, as ``../shared/flexdata``'s do). The manifest has flexdata's columns plus
``source_commit`` and ``dhash``, and loads with :func:`flexguard.datasets.load_manifest`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from flexguard.models.taxonomy import CATEGORY_IDS, ORDINARY

from .manifest import IMAGE_SUFFIXES, ManifestError

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
# The guard's difference hash: a 17x16 grey thumbnail, one bit per horizontal neighbour pair
# (256 bits). Two photos within NEAR_DUPLICATE_BITS of each other are the same photo resized,
# recompressed or lightly cropped; the guard uses 12 for the hidden set, we use the same.
DHASH_SIDE = 16
NEAR_DUPLICATE_BITS = 12
# One source should not set the style of a category (GATHERING.md: 30-40 per repository at most).
PHOTOS_PER_SOURCE_WARNING = 40

# Contact sheets: 6 x 5 tiles of 200 px, numbered, so a person can read every photo and its number.
SHEET_COLUMNS, SHEET_ROWS, TILE_SIDE = 6, 5, 200
LABEL_HEIGHT = 22
FONT_SIZE = 18

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


# ---------------------------------------------------------------------------------------------
# Perceptual hashes: the guard's algorithm, so "duplicate" means the same thing everywhere.


def dhash(image: Image.Image) -> np.ndarray:
    """256-bit difference hash of an (already upright) image, as 32 packed bytes."""
    grey = image.convert("L").resize((DHASH_SIDE + 1, DHASH_SIDE), Image.LANCZOS)
    pixels = np.asarray(grey, dtype=np.int16)
    return np.packbits((pixels[:, 1:] > pixels[:, :-1]).flatten())


def hamming(reference: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Bit distance from ``probe`` (32 bytes) to every row of ``reference`` ([N, 32] bytes)."""
    if len(reference) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unpackbits(np.bitwise_xor(reference, probe), axis=1).sum(axis=1)


@dataclass
class HashIndex:
    """Known photos' hashes and what each one is, for near-duplicate checks."""

    hashes: np.ndarray  # [N, 32] uint8
    names: list[str]

    def nearest(self, probe: np.ndarray) -> tuple[int, str]:
        distances = hamming(self.hashes, probe)
        if len(distances) == 0:
            return DHASH_SIDE * DHASH_SIDE, ""
        best = int(distances.argmin())
        return int(distances[best]), self.names[best]

    def add(self, probe: np.ndarray, name: str) -> None:
        self.hashes = np.vstack([self.hashes, probe[None, :]])
        self.names.append(name)


def _open_upright(data: bytes | Path) -> Image.Image:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(source) as image:
        image.seek(0)
        return ImageOps.exif_transpose(image).convert("RGB")


def _cache_dir() -> Path:
    return Path(os.environ.get("FLEXGUARD_CACHE", Path.cwd() / ".cache")) / "dhash"


def _hashes_of_manifest(manifest: Path) -> HashIndex:
    """Hashes of every photo a manifest lists, from its ``dhash`` column or computed once and cached."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = [f"{manifest.parent.name}/{row['path']}" for row in rows]
    if rows and all(row.get("dhash") for row in rows):
        return HashIndex(np.array([bytearray.fromhex(row["dhash"]) for row in rows], dtype=np.uint8), names)
    stat = manifest.stat()
    cache = _cache_dir() / f"{manifest.parent.name}-{manifest.stem}-{stat.st_size}-{int(stat.st_mtime)}.npy"
    if cache.is_file():
        return HashIndex(np.load(cache), names)
    hashes = np.zeros((len(rows), DHASH_SIDE * DHASH_SIDE // 8), dtype=np.uint8)
    for position, row in enumerate(_progress(rows, f"hashing {manifest}")):
        hashes[position] = dhash(_open_upright(manifest.parent / row["path"]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, hashes)
    return HashIndex(hashes, names)


def known_photos(reference_manifests: Sequence[Path]) -> HashIndex:
    """Every photo already in the data: the given manifests (flexdata's) plus every batch's."""
    manifests = [*reference_manifests, *sorted(BATCHES_DIR.glob("*/manifest.csv"))]
    index = HashIndex(np.zeros((0, DHASH_SIDE * DHASH_SIDE // 8), dtype=np.uint8), [])
    for manifest in manifests:
        part = _hashes_of_manifest(manifest)
        index.hashes = np.vstack([index.hashes, part.hashes])
        index.names.extend(part.names)
    return index


def gathered_sources(reference_manifests: Sequence[Path]) -> dict[str, str]:
    """Sources (lower-case) already in the reference manifests or a batch, and where."""
    found: dict[str, str] = {}
    for manifest in [*reference_manifests, *sorted(BATCHES_DIR.glob("*/manifest.csv"))]:
        for row in _read_rows(manifest):
            found.setdefault(row.get("source_repo", "").lower(), str(manifest))
    return found


def _progress(items: Sequence, description: str) -> Iterable:
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="photo", file=sys.stderr, leave=False)


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
    """Image files in the source's newest commit, with their sizes, in path order."""
    listing = _git(git_dir, "ls-tree", "-r", "-l", "-z", "HEAD", *([under] if under else []))
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.decode("utf-8", "replace").partition("\t")
        _mode, kind, sha, size = meta.split()
        if kind == "blob" and Path(path).suffix.lower() in IMAGE_SUFFIXES and size != "-":
            yield Blob(path, sha, int(size))


def source_license(git_dir: Path) -> str:
    """The first line of the repository's licence file as found, or ``none found``."""
    top = _git(git_dir, "ls-tree", "--name-only", "HEAD").decode("utf-8", "replace").splitlines()
    for name in top:
        if LICENSE_NAMES.match(name):
            text = _git(git_dir, "show", f"HEAD:{name}").decode("utf-8", "replace").strip()
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            return f"{name}: {first[:80]}"
    return "none found"


def check_source(source: str) -> None:
    """Refuse a source that the holdout guard names (or say loudly that the guard is absent)."""
    if not GUARD.is_file():
        raise GatherError(f"holdout guard not found at {GUARD}: cannot check {source}, so it is not used")
    result = subprocess.run([sys.executable, str(GUARD), "source", source], capture_output=True, text=True)
    if result.returncode != 0:
        raise GatherError(f"{source}: the holdout guard refuses it: {result.stdout.strip()}")


def source_slug(source: str) -> str:
    return source.replace("/", "+")


# ---------------------------------------------------------------------------------------------
# Candidates and contact sheets.


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_sheet(tiles: Sequence[tuple[Image.Image, str]], out: Path) -> None:
    """Draw up to SHEET_COLUMNS x SHEET_ROWS tiles, each captioned, into one PNG (viewers show PNG)."""
    sheet = Image.new("RGB", (SHEET_COLUMNS * TILE_SIDE, SHEET_ROWS * (TILE_SIDE + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for position, (image, caption) in enumerate(tiles):
        column, row = position % SHEET_COLUMNS, position // SHEET_COLUMNS
        thumb = image.copy()
        thumb.thumbnail((TILE_SIDE - 4, TILE_SIDE - 4))
        left, top = column * TILE_SIDE, row * (TILE_SIDE + LABEL_HEIGHT)
        sheet.paste(thumb, (left + (TILE_SIDE - thumb.width) // 2, top + (TILE_SIDE - thumb.height) // 2))
        draw.text((left + 3, top + TILE_SIDE), caption, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def _sheets(tiles: list[tuple[Image.Image, str]], out_dir: Path, prefix: str) -> list[Path]:
    per_sheet = SHEET_COLUMNS * SHEET_ROWS
    paths = []
    for start in range(0, len(tiles), per_sheet):
        path = out_dir / f"{prefix}{start // per_sheet:03d}.png"
        draw_sheet(tiles[start:start + per_sheet], path)
        paths.append(path)
    return paths


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
    already = gathered_sources(reference_manifests)
    if source.lower() in already:
        raise GatherError(f"{source} is already gathered in {already[source.lower()]}: pick a new source")
    folder = work_dir / source_slug(source)
    folder.mkdir(parents=True, exist_ok=True)
    commit = _git(git_dir, "rev-parse", "HEAD").decode().strip()
    license_found = source_license(git_dir)
    known = known_photos(reference_manifests)
    blobs = [b for b in source_blobs(git_dir, under) if MIN_FILE_BYTES <= b.size <= MAX_FILE_BYTES]
    rows, tiles = [], []
    small = unreadable = duplicates = 0
    for blob in _progress(blobs, f"decoding {source}"):
        try:
            image = _open_upright(_git(git_dir, "cat-file", "blob", blob.sha))
        except Exception:  # a broken or unsupported file is a reason to skip it, not to stop
            unreadable += 1
            continue
        if min(image.size) < MIN_SHORT_SIDE:
            small += 1
            continue
        probe = dhash(image)
        distance, name = known.nearest(probe)
        index = len(rows)
        duplicate_of = name if distance <= NEAR_DUPLICATE_BITS else ""
        known.add(probe, f"candidate {index} of {source}")
        rows.append({"index": index, "source_path": blob.path, "width": image.width, "height": image.height,
                     "dhash": probe.tobytes().hex(), "duplicate_of": duplicate_of})
        if duplicate_of:
            duplicates += 1
            continue
        image.thumbnail((STORED_SIDE, STORED_SIDE), Image.LANCZOS)
        image.save(folder / f"{index}.jpg", quality=STORED_QUALITY)
        tiles.append((image, f"{index}  {Path(blob.path).name[:18]}"))
    with (folder / "candidates.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, CANDIDATE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "source.txt").write_text(f"source={source}\ncommit={commit}\nlicense={license_found}\n",
                                       encoding="utf-8")
    for old in folder.glob("sheet-*.png"):
        old.unlink()
    sheets = _sheets(tiles, folder, "sheet-")
    return CandidateSet(folder, len(tiles), small, unreadable, duplicates, license_found, commit, sheets)


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
    known = known_photos(reference_manifests)
    new_rows = []
    for index in indices:
        candidate = by_index[index]
        if candidate["source_path"] in taken:
            raise GatherError(f"candidate {index} ({candidate['source_path']}) is already in {batch}")
        probe = np.frombuffer(bytes.fromhex(candidate["dhash"]), dtype=np.uint8)
        distance, name = known.nearest(probe)
        if distance <= NEAR_DUPLICATE_BITS:
            raise GatherError(f"candidate {index} is a near-duplicate ({distance} bits) of {name}")
        known.add(probe, f"candidate {index}")
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(candidate["source_path"]).stem)[:40]
        relative = Path("images") / categories[0] / f"{source_slug(source)}__{stem}_{candidate['dhash'][:6]}.jpg"
        new_rows.append({
            "path": relative.as_posix(), "category": category,
            "label": "0" if category == ORDINARY else "1", "hard_negative": "1" if hard_negative else "0",
            "source_repo": source, "group": group or source, "source_path": candidate["source_path"],
            "source_commit": info["commit"], "license": info["license"], "dhash": candidate["dhash"],
        })
    for index, row in zip(indices, new_rows, strict=True):
        target = folder / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / f".{target.name}.tmp").write_bytes((candidate_folder / f"{index}.jpg").read_bytes())
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


def batch_sheets(batch: str, out_dir: Path) -> list[Path]:
    """Contact sheets of a batch, one run per label (ordinary hard negatives apart), captioned by file."""
    folder = batch_dir(batch)
    rows = _read_rows(folder / "manifest.csv")
    paths: list[Path] = []
    for old in out_dir.glob(f"{batch}-*.png"):
        old.unlink()
    labels = sorted({(row["category"], row["hard_negative"]) for row in rows})
    for category, hard in labels:
        chosen = [row for row in rows if (row["category"], row["hard_negative"]) == (category, hard)]
        tiles = [(_open_upright(folder / row["path"]), Path(row["path"]).name.split("__")[-1][:22])
                 for row in chosen]
        name = f"{batch}-{category.replace(';', '+')}{'-hard' if hard == '1' else ''}-"
        paths.extend(_sheets(tiles, out_dir, name))
    return paths
