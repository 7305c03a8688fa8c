"""The scan's output file is its journal: rows go in as files are scored, and a rerun continues from it.

There is no separate state to get out of step with the output. Each row is appended in one write and
flushed, so a crash, Ctrl-C or ``kill -9`` loses at most the row being written; ``fsync`` runs every
few seconds and at the end, so a power cut loses at most those seconds. On start the existing rows are
read back: their paths are the files already done, and a torn last row (no final newline, or a CSV
record cut inside a quoted field) is cut off so its file is simply scored again. Every file therefore
ends up in the output exactly once.

Rows from two different scans must not be mixed in one file, so the scan's parameters (roots,
include/exclude globs, model name and version) go in a sidecar, ``FILE.scan.json``, written before
the first row. A sidecar rather than a first-line header keeps the output a plain JSON Lines or CSV
file that any tool reads. A rerun with other parameters, or over a file that has no sidecar (not ours),
is refused unless ``--force``, which starts the file over. An exclusive lock on the output keeps two
scans from writing the same file at once; the kernel drops it if the process dies.

A full disk or a read-only file system never leaves a damaged row: each row goes out with ``os.write``
(no Python buffer holding half a row), and if a write fails part-way the file is cut back to the end of
the last whole row before the scan stops with a ``ScanError`` that names the cause. Rerunning, once
there is room, continues from there.

Just over 300 lines: reading back, repairing and appending both formats is one crash-safety
argument, kept in one place.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

from .rows import ModelIdentity, ScanError, csv_header, from_csv_record, to_csv_record

SIDECAR_SUFFIX = ".scan.json"
SIDECAR_FORMAT = 1
# Rows are flushed to the kernel one by one (enough for crashes and kill -9); fsync, which survives a
# power cut but costs a disk round trip, runs at most this often.
FSYNC_INTERVAL_S = 2.0
CSV_SUFFIX = ".csv"
# Indirection so tests can simulate a disk that fills up part-way through a row.
_write = os.write


@dataclass(frozen=True)
class ScanParams:
    """What makes two runs the same scan: rows from runs that differ in any of these are never mixed."""

    roots: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    model: ModelIdentity

    def to_json(self) -> dict[str, Any]:
        return {"roots": list(self.roots), "include": list(self.include), "exclude": list(self.exclude), "model": self.model.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ScanParams":
        return cls(tuple(data["roots"]), tuple(data["include"]), tuple(data["exclude"]), ModelIdentity.from_json(data["model"]))

    def differences(self, other: "ScanParams") -> list[str]:
        """Human-readable differences from ``other`` (this run's parameters)."""
        pairs = (
            ("folders", self.roots, other.roots),
            ("--include", self.include, other.include),
            ("--exclude", self.exclude, other.exclude),
        )
        found = [f"{name} {' '.join(old) or '(none)'}, now {' '.join(new) or '(none)'}" for name, old, new in pairs if old != new]
        if self.model != other.model:
            found.append(f"model {self.model.describe()}, now {other.model.describe()}")
        return found


# --- The two row formats. ``records`` yields (row or None for a header, byte offset after it) and stops
# quietly at a torn tail; anything else that does not parse is damage we will not guess about.


class _JsonLines:
    def header(self) -> bytes:
        return b""

    def encode(self, row: dict[str, Any]) -> bytes:
        # A file name that is not valid UTF-8 reaches us with lone surrogates (os.fsdecode); written as
        # \udcXX escapes it stays valid JSON and reads back as the same path.
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace") + b"\n"

    def records(self, handle: BinaryIO, path: Path) -> Iterator[tuple[dict[str, Any] | None, int]]:
        offset = 0
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                return
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or "path" not in row:
                raise ScanError(f"{path}: line {number} is not a scan row; repair or remove it, or add --force to start over")
            offset += len(line)
            yield row, offset


class _Csv:
    def __init__(self, category_ids: Sequence[str]):
        self.category_ids = tuple(category_ids)
        self.columns = csv_header(self.category_ids)

    def _line(self, cells: Sequence[str]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        # surrogateescape writes a non-UTF-8 file name back as its original bytes, so it reads back equal.
        return buffer.getvalue().encode("utf-8", "surrogateescape")

    def header(self) -> bytes:
        return self._line(self.columns)

    def encode(self, row: dict[str, Any]) -> bytes:
        return self._line(to_csv_record(row, self.category_ids))

    def records(self, handle: BinaryIO, path: Path) -> Iterator[tuple[dict[str, Any] | None, int]]:
        consumed = 0
        at_end = False

        def lines() -> Iterator[str]:
            # csv.reader pulls one line at a time and returns a record as soon as it is complete, so
            # ``consumed`` is the record's end offset when it comes out (a quoted field may span lines).
            nonlocal consumed, at_end
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                consumed += len(line)
                yield line.decode("utf-8", "surrogateescape")
            at_end = True

        reader = csv.reader(lines(), strict=True)
        number = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                if at_end:
                    return  # the file ends inside a quoted field: a torn row
                raise ScanError(f"{path}: record {number + 1} is not valid CSV ({error}); add --force to start over") from None
            number += 1
            if number == 1:
                if record != self.columns:
                    raise ScanError(f"{path} does not have the columns of this scan's CSV; add --force to start over")
                yield None, consumed
            elif len(record) != len(self.columns):
                raise ScanError(f"{path}: record {number} has {len(record)} fields, not {len(self.columns)}; add --force to start over")
            else:
                yield from_csv_record(record, self.category_ids), consumed


def _format_for(path: Path, model: ModelIdentity) -> _JsonLines | _Csv:
    return _Csv(model.category_ids) if path.suffix.lower() == CSV_SUFFIX else _JsonLines()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_rows(path: Path, model: ModelIdentity) -> Iterator[dict[str, Any]]:
    """Every complete row of an output file (for the report, after the scan)."""
    row_format = _format_for(path, model)
    with open(path, "rb") as handle:
        for row, _ in row_format.records(handle, path):
            if row is not None:
                yield row


class Journal:
    """An output file opened for a scan: what it already holds, and appending to it."""

    def __init__(self, path: Path, params: ScanParams, force: bool = False):
        self.path = path
        self.sidecar = sidecar_path(path)
        self.format = _format_for(path, params.model)
        self.paths: set[str] = set()
        self.decisions: Counter = Counter()
        self.errors: Counter = Counter()
        self.repaired = False
        if path.is_dir():
            raise ScanError(f"--out {path} is a folder; give a file name ending in .jsonl or .csv")
        try:
            self._file = open(path, "a+b")
        except OSError as error:
            raise ScanError(f"cannot write {path}: {error.strerror or error}") from None
        try:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ScanError(f"{path} is being written by another flexguard scan") from None
            self._open(params, force)
        except OSError as error:
            self._file.close()
            raise ScanError(f"cannot write {path}: {error.strerror or error}") from None
        except BaseException:
            self._file.close()
            raise
        self.previous = len(self.paths)
        self._end = os.fstat(self._file.fileno()).st_size  # where the last whole row ends
        self._synced = time.monotonic()

    def _open(self, params: ScanParams, force: bool) -> None:
        if force or os.fstat(self._file.fileno()).st_size == 0:
            self._file.truncate(0)
            self._write_sidecar(params)
        else:
            self._check_sidecar(params)
            self._load()
        if os.fstat(self._file.fileno()).st_size == 0:
            self._file.write(self.format.header())
            self._file.flush()

    def _write_sidecar(self, params: ScanParams) -> None:
        # Written whole or not at all: a crash here must not leave a half sidecar next to the rows.
        temporary = self.sidecar.with_name(self.sidecar.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"format": SIDECAR_FORMAT, "params": params.to_json()}, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.sidecar)

    def _check_sidecar(self, params: ScanParams) -> None:
        try:
            recorded = json.loads(self.sidecar.read_text(encoding="utf-8"))
            if recorded["format"] != SIDECAR_FORMAT:
                raise ValueError(f"format {recorded['format']!r} is not {SIDECAR_FORMAT}")
            previous = ScanParams.from_json(recorded["params"])
        except FileNotFoundError:
            raise ScanError(
                f"{self.path} exists and was not written by flexguard scan (no {self.sidecar.name} beside it); "
                "choose another --out, or add --force to replace it"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ScanError(f"cannot read {self.sidecar} ({error}); add --force to start over") from None
        differences = previous.differences(params)
        if differences:
            raise ScanError(
                f"{self.path} holds a scan with other options ({'; '.join(differences)}); "
                "rerun with the same options to continue it, or add --force to start over"
            )

    def _load(self) -> None:
        self._file.seek(0)
        end = 0
        for row, end in self.format.records(self._file, self.path):
            if row is not None:
                if row["path"] in self.paths:
                    raise ScanError(f"{self.path} lists {row['path']} twice; add --force to start over")
                self._count(row)
        if end < os.fstat(self._file.fileno()).st_size:
            self._file.truncate(end)
            self.repaired = True
        self._file.seek(0, os.SEEK_END)

    def _count(self, row: dict[str, Any]) -> None:
        self.paths.add(row["path"])
        if row["ok"]:
            self.decisions[row["decision"]] += 1
        else:
            self.errors[row["error_code"]] += 1

    def append(self, row: dict[str, Any]) -> None:
        if row["path"] in self.paths:
            raise RuntimeError(f"{row['path']} was scored twice")  # a scorer bug, never the user's doing
        data = self.format.encode(row)
        fd = self._file.fileno()
        try:
            written = 0
            while written < len(data):  # the file is in append mode: each write lands at its end
                written += _write(fd, data[written:])
        except OSError as error:
            self._cut_back()
            raise ScanError(
                f"cannot write {self.path}: {error.strerror or error}; its {len(self.paths)} rows are intact, "
                "rerun the same command to continue once the problem is fixed"
            ) from None
        self._end += len(data)
        self._count(row)
        now = time.monotonic()
        if now - self._synced >= FSYNC_INTERVAL_S:
            try:
                os.fsync(fd)
            except OSError as error:  # a full disk can first show here; the rows written are whole
                raise ScanError(f"cannot write {self.path}: {error.strerror or error}") from None
            self._synced = now

    def _cut_back(self) -> None:
        """Drop the part of a row a failed write left (truncating needs no free space)."""
        try:
            os.ftruncate(self._file.fileno(), self._end)
        except OSError:
            pass  # a read-only file system wrote nothing either; a rerun cuts any torn tail

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            raise ScanError(f"cannot write {self.path}: {error.strerror or error}") from None
        finally:
            self._file.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        try:
            self.close()
        except ScanError:
            if exc_type is None:
                raise  # otherwise the error already on its way out says more
