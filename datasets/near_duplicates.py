"""Near-duplicate photos, by the holdout guard's perceptual hash, so "the same photo" means one thing.

A photo resized, recompressed or lightly cropped is still the same photo: in training and validation at
once it inflates the validation figures, and from the hidden set it makes them meaningless. The guard
(``../shared/holdout-guard/guard.py``) uses a 256-bit difference hash; gathering uses the same hash
and the same distance against every photo already in the data.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from flexguard.models.preprocessing import open_image

# A 17x16 grey thumbnail, one bit per horizontal neighbour pair: 256 bits. Two photos within
# NEAR_DUPLICATE_BITS of each other are the same photo (the guard's own threshold for the hidden set).
DHASH_SIDE = 16
HASH_BYTES = DHASH_SIDE * DHASH_SIDE // 8
NEAR_DUPLICATE_BITS = 12


def open_upright(data: bytes | Path) -> Image.Image:
    """A photo's first frame, EXIF orientation applied, as RGB (HEIC too, whatever its file is called).

    Transparency is dropped, each pixel keeping its own colour, as every batch photo has been stored:
    ``restore`` remakes them from this, so it stays. Pillow drops it too, but warns for every palette
    photo whose transparency is a table of bytes, hundreds of times over a restore's progress bar.
    """
    with open_image(data) as image:
        image.seek(0)
        upright = ImageOps.exif_transpose(image)
        upright.info.pop("transparency", None)
        return upright.convert("RGB")


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
    """Known photos' hashes and what each one is."""

    hashes: np.ndarray  # [N, 32] uint8
    names: list[str]

    @classmethod
    def empty(cls) -> HashIndex:
        return cls(np.zeros((0, HASH_BYTES), dtype=np.uint8), [])

    def nearest(self, probe: np.ndarray) -> tuple[int, str]:
        """The distance to the closest known photo, and its name (the widest distance when empty)."""
        distances = hamming(self.hashes, probe)
        if len(distances) == 0:
            return DHASH_SIDE * DHASH_SIDE, ""
        best = int(distances.argmin())
        return int(distances[best]), self.names[best]

    def duplicate_of(self, probe: np.ndarray) -> str:
        """The name of a known photo ``probe`` is a near-duplicate of, or ``""``."""
        distance, name = self.nearest(probe)
        return name if distance <= NEAR_DUPLICATE_BITS else ""

    def add(self, probe: np.ndarray, name: str) -> None:
        self.hashes = np.vstack([self.hashes, probe[None, :]])
        self.names.append(name)

    def extend(self, other: HashIndex) -> None:
        self.hashes = np.vstack([self.hashes, other.hashes])
        self.names.extend(other.names)


def progress(items: Sequence, description: str) -> Iterable:
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="photo", file=sys.stderr, leave=False)


def _cache_dir() -> Path:
    return Path(os.environ.get("FLEXGUARD_CACHE", Path.cwd() / ".cache")) / "dhash"


def hashes_of_manifest(manifest: Path) -> HashIndex:
    """Hashes of every photo a manifest lists: its ``dhash`` column, or computed once and cached."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = [f"{manifest.parent.name}/{row['path']}" for row in rows]
    if rows and all(row.get("dhash") for row in rows):
        return HashIndex(np.array([bytearray.fromhex(row["dhash"]) for row in rows], dtype=np.uint8), names)
    stat = manifest.stat()
    # The file's size and time name the cache entry: an edited manifest is hashed again.
    cache = _cache_dir() / f"{manifest.parent.name}-{manifest.stem}-{stat.st_size}-{int(stat.st_mtime)}.npy"
    if cache.is_file():
        return HashIndex(np.load(cache), names)
    hashes = np.zeros((len(rows), HASH_BYTES), dtype=np.uint8)
    for position, row in enumerate(progress(rows, f"hashing {manifest}")):
        hashes[position] = dhash(open_upright(manifest.parent / row["path"]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, hashes)
    return HashIndex(hashes, names)


def known_photos(manifests: Sequence[Path]) -> HashIndex:
    """Every photo the manifests list."""
    index = HashIndex.empty()
    for manifest in manifests:
        index.extend(hashes_of_manifest(manifest))
    return index
