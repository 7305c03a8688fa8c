"""Which files a scan scores: folders walked recursively, photos recognised by their content.

Auditors' folders are exports and archives, not curated photo sets: extensions lie or are missing,
there are documents and sidecar files, and links may point back up the tree. So a file is a photo or
a video when its first bytes say so (whatever its name), folders reached twice through
links are not walked again, hidden entries are skipped, and every file left out is counted by reason
so the summary accounts for all of them. Unreadable and empty files are *not* left out: they get an
error row, because a photo that cannot be read is exactly what an auditor needs to see.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Container, Iterator, Sequence

from flexguard.inference.video import VIDEO_SNIFF_BYTES, sniff_video

from .rows import ScanError

# Enough to tell every signature below apart, and the video containers (inference.video).
SNIFF_BYTES = max(32, VIDEO_SNIFF_BYTES)
# Image signatures at offset 0. Formats Pillow cannot decode are listed too, on purpose: such a file
# is still a photo the auditor should know about, and gets an "unsupported_format" error row.
IMAGE_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian (also most camera raw formats)
    b"MM\x00*",  # TIFF, big-endian
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",  # JPEG 2000
    b"\xff\x4f\xff\x51",  # JPEG 2000 codestream
    b"\xff\x0a",  # JPEG XL codestream
    b"\x00\x00\x00\x0cJXL \r\n\x87\n",  # JPEG XL container
)
# RIFF containers are images only with the WebP form type (AVI and WAV share the header).
RIFF, WEBP, WEBP_FORM_TYPE_AT = b"RIFF", b"WEBP", 8
# HEIF (iPhone HEIC) and AVIF are ISO media files: an "ftyp" box whose major brand names an image
# format. Video brands (isom, mp42, qt...) share the box and are not photos.
FTYP, FTYP_AT, BRAND_AT, BRAND_LENGTH = b"ftyp", 4, 8, 4
IMAGE_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})
# "BM" alone starts plenty of text; a real BMP has one of these DIB header sizes at byte 14.
BMP_MAGIC, BMP_DIB_SIZE_AT = b"BM", 14
BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

# Reasons for leaving a file or folder out, as counted in the summary.
HIDDEN = "hidden"
NOT_IMAGE = "not a photo or video"
EXCLUDED = "excluded by --include/--exclude"
NOT_REGULAR = "not a regular file"
REVISITED = "folders reached again through a link"
UNREADABLE_FOLDER = "folders that could not be read"


def looks_like_image(head: bytes) -> bool:
    """Whether a file's first ``SNIFF_BYTES`` bytes are those of an image format."""
    if head.startswith(IMAGE_SIGNATURES):
        return True
    if head.startswith(RIFF):
        return head[WEBP_FORM_TYPE_AT:WEBP_FORM_TYPE_AT + len(WEBP)] == WEBP
    if head[FTYP_AT:FTYP_AT + len(FTYP)] == FTYP:
        return head[BRAND_AT:BRAND_AT + BRAND_LENGTH] in IMAGE_BRANDS
    if head.startswith(BMP_MAGIC) and len(head) >= BMP_DIB_SIZE_AT + 4:
        return int.from_bytes(head[BMP_DIB_SIZE_AT:BMP_DIB_SIZE_AT + 4], "little") in BMP_DIB_SIZES
    return False


def _worth_a_row(path: str) -> bool:
    """Sniff one file: photos, empty files and files that cannot be opened all get a row."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return True  # the scorer reads it again and records why it failed
    # Video containers flexguard does not take (Matroska, AVI) get a row too: unsupported_format.
    return not head or looks_like_image(head) or sniff_video(head) is not None


def _opens_without_blocking(path: str) -> bool:
    """A regular file, or one whose status cannot be read (its row will say why); not a pipe or a device."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    """Like .gitignore: a pattern without "/" matches the name at any depth, one with "/" the relative path.

    Case-insensitive, because exports mix IMG_0001.JPG and img_0001.jpg for the same kind of file.
    """
    relative = relative.lower()
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.lower().strip("/")  # "cache/" names a folder; the walk tells folders apart itself
        if fnmatchcase(relative if "/" in pattern else name, pattern):
            return True
    return False


@dataclass
class Walk:
    """The photos under ``roots``; ``skipped`` counts what was left out, by reason, once ``paths`` has run."""

    roots: Sequence[str]
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    skipped: Counter = field(default_factory=Counter)
    unreadable_folders: list[str] = field(default_factory=list)

    @staticmethod
    def absolute_roots(roots: Sequence[str | os.PathLike]) -> list[str]:
        """Roots as absolute paths (so a resume from another working folder matches), each checked to exist."""
        absolute = []
        for root in roots:
            path = os.path.abspath(os.fspath(root))
            if not os.path.exists(path):
                raise ScanError(f"no such file or folder: {os.fspath(root)}")
            absolute.append(path)
        return absolute

    def paths(self, done: Container[str] = frozenset()) -> Iterator[str]:
        """Absolute paths to score, in a stable order, leaving out those in ``done`` (without opening them)."""
        self.skipped.clear()
        self.unreadable_folders.clear()
        seen_files: set[str] = set()
        seen_folders: set[tuple[int, int]] = set()
        for root in self.roots:
            if os.path.isdir(root):
                candidates = self._walk_folder(root, root, seen_folders)
            elif _opens_without_blocking(root):
                candidates = iter([root])  # a file named on the command line is scored whatever its name
            else:
                self.skipped[NOT_REGULAR] += 1
                continue
            for path in candidates:
                # Overlapping roots (photos/ and photos/2023/) must not give a file two rows.
                if path in seen_files or path in done:
                    continue
                seen_files.add(path)
                if _worth_a_row(path):
                    yield path
                else:
                    self.skipped[NOT_IMAGE] += 1

    def _walk_folder(self, root: str, folder: str, seen_folders: set[tuple[int, int]]) -> Iterator[str]:
        try:
            info = os.stat(folder)
            key = (info.st_dev, info.st_ino)
            if key in seen_folders:
                # A link back up the tree (or to a folder walked already): following it would never end.
                self.skipped[REVISITED] += 1
                return
            seen_folders.add(key)
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            self.skipped[UNREADABLE_FOLDER] += 1
            self.unreadable_folders.append(folder)
            return
        for entry in entries:
            if entry.name.startswith("."):
                self.skipped[HIDDEN] += 1
                continue
            relative = os.path.relpath(entry.path, root).replace(os.sep, "/")
            try:
                is_folder, is_file = entry.is_dir(), entry.is_file()
                dangling = entry.is_symlink() and not os.path.exists(entry.path)
            except OSError:
                is_folder, is_file, dangling = False, False, True
            if is_folder:
                if self.exclude and _matches(relative, self.exclude):
                    self.skipped[EXCLUDED] += 1
                else:
                    yield from self._walk_folder(root, entry.path, seen_folders)
            elif is_file or dangling:
                # A dangling link is listed as a file that cannot be read: the photo it named is gone.
                if (self.include and not _matches(relative, self.include)) or (self.exclude and _matches(relative, self.exclude)):
                    self.skipped[EXCLUDED] += 1
                else:
                    yield entry.path
            else:
                # Pipes, sockets and devices: opening a pipe would hang the scan.
                self.skipped[NOT_REGULAR] += 1

