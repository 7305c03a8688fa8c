"""``flexguard scan``: score every photo under some folders into a resumable output file.

This module only wires the parts together: ``walk`` finds the photos, a scorer (``local``,
``ray_engine`` or ``server``) turns paths into rows, ``journal`` appends them to the output
file and knows what an earlier, interrupted run already did, and ``report`` writes the reviewer's
HTML. Progress goes to stderr (a bar on a terminal, a line now and then in a log); the summary is
returned for the command to print.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Protocol, Sequence, TextIO

from tqdm import tqdm

from flexguard.models import shipped_model_path
from flexguard.models.vocabulary import FLAGGED

from .journal import Journal, ScanParams, read_rows
from .rows import ModelIdentity, ScanError
from .summary import ScanSummary
from .walk import Walk

# Photos per request (--server) or per Ray actor call: enough to share each call's fixed costs; the
# local engine uses LOCAL_BATCH_SIZE instead, for the reason given there.
DEFAULT_BATCH_SIZE = 8
ENGINES = ("local", "ray")
# Without a terminal, one progress line this often is enough for a log and cheap to store.
PROGRESS_LINE_INTERVAL_S = 10.0


class Scorer(Protocol):
    model: ModelIdentity

    def rows(self, paths: Iterable[str]) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ScanOptions:
    roots: Sequence[str | os.PathLike]
    out: Path
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    force: bool = False
    report: Path | None = None
    engine: str = "local"
    server: str | None = None
    ray_address: str | None = None
    model: Path | None = None
    workers: int | None = None
    # None: LOCAL_BATCH_SIZE with the local engine, DEFAULT_BATCH_SIZE through --server or Ray.
    batch_size: int | None = None

    # One onnxruntime thread per worker does 11.0-11.5 core-ms per image at batch 2 and 13.2 at batch 8
    # on the 2-core development machine (batch 8 no longer fits the core's cache); a local scan of
    # 1440x1080 JPEGs measured 120 files/s at batch 2, 116 at 4 and 103 at 8 (docs/performance.md).
    LOCAL_BATCH_SIZE: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if self.batch_size is None:
            local = self.engine == "local" and not self.server
            # The dataclass is frozen; this is its constructor finishing the default.
            object.__setattr__(self, "batch_size", self.LOCAL_BATCH_SIZE if local else DEFAULT_BATCH_SIZE)


class Progress:
    """A tqdm bar (files/s, ETA) on a terminal; otherwise a plain line every ``interval_s``, for logs."""

    def __init__(self, total: int, stream: TextIO, interval_s: float = PROGRESS_LINE_INTERVAL_S):
        self.total = total
        self.stream = stream
        self.interval_s = interval_s
        self.done = self.flagged = self.failed = 0
        self.start = self.last_line = time.monotonic()
        self.bar = tqdm(total=total, unit="file", desc="scan", file=stream, dynamic_ncols=True) if stream.isatty() else None

    def advance(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.flagged += row["decision"] in FLAGGED
        self.failed += not row["ok"]
        if self.bar is not None:
            self.bar.set_postfix(flagged=self.flagged, errors=self.failed, refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.last_line >= self.interval_s:
            self._line()

    def _line(self) -> None:
        self.last_line = now = time.monotonic()
        rate = self.done / (now - self.start) if now > self.start else 0.0
        eta = timedelta(seconds=round((self.total - self.done) / rate)) if rate else "?"
        share = self.done / self.total if self.total else 1.0
        print(f"scan: {self.done}/{self.total} files ({share:.0%}), {rate:.1f} files/s, ETA {eta}, "
              f"{self.flagged} flagged, {self.failed} errors", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.done:
            self._line()


def _validate(options: ScanOptions) -> None:
    if options.batch_size < 1:
        raise ScanError(f"--batch-size must be at least 1, not {options.batch_size}")
    if options.workers is not None and options.workers < 1:
        raise ScanError(f"--workers must be at least 1, not {options.workers}")
    if options.engine not in ENGINES:
        raise ScanError(f"--engine must be one of {', '.join(ENGINES)}, not {options.engine!r}")
    if options.server and options.engine != "local":
        raise ScanError("--server and --engine ray are two ways to run the model; choose one")
    if options.server and options.model:
        raise ScanError("--model is for the local and Ray engines; the service scores with its own model")
    if options.ray_address and options.engine != "ray":
        raise ScanError("--ray-address needs --engine ray")
    if not options.out.parent.is_dir():
        raise ScanError(f"folder of --out does not exist: {options.out.parent}")
    if options.report is not None:
        if not options.report.parent.is_dir():
            raise ScanError(f"folder of --report does not exist: {options.report.parent}")
        if options.report.resolve() == options.out.resolve():
            raise ScanError("--report and --out must be different files")


def _scorer(options: ScanOptions) -> Scorer:
    # The heavy imports (onnxruntime, httpx, ray) wait until we know which one the scan needs.
    workers = options.workers or len(os.sched_getaffinity(0))
    if options.server:
        from .server import ServerScorer

        return ServerScorer(options.server, workers, options.batch_size)
    model = options.model or shipped_model_path()
    if options.engine == "ray":
        from .ray_engine import RayScorer

        return RayScorer(model, options.ray_address, options.workers, options.batch_size)
    from .local import LocalScorer

    return LocalScorer(model, workers, options.batch_size)


def run_scan(options: ScanOptions, stream: TextIO | None = None) -> ScanSummary:
    """Scan, append rows to ``options.out`` (continuing an earlier run), write the report; the summary.

    Progress goes to ``stream`` (default: stderr at call time).
    """
    stream = stream or sys.stderr
    _validate(options)
    walk = Walk(Walk.absolute_roots(options.roots), tuple(options.include), tuple(options.exclude))
    scorer = _scorer(options)
    try:
        params = ScanParams(tuple(walk.roots), walk.include, walk.exclude, scorer.model)
        with Journal(options.out, params, options.force) as journal:
            summary = _scan(walk, scorer, journal, stream)
    finally:
        scorer.close()
    if options.report is not None:
        from .report import write_report

        write_report(options.report, read_rows(options.out, scorer.model), scorer.model, summary, walk.roots)
        summary.report = options.report
    return summary


def _scan(walk: Walk, scorer: Scorer, journal: Journal, stream: TextIO) -> ScanSummary:
    if journal.repaired:
        print(f"scan: cut a half-written last row from {journal.path}; its file is scanned again", file=stream)
    print(f"scan: looking for photos in {' '.join(walk.roots)}", file=stream, flush=True)
    pending = list(walk.paths(done=journal.paths))
    earlier = f", {journal.previous} already in {journal.path}" if journal.previous else ""
    print(f"scan: {len(pending)} files to scan{earlier}", file=stream, flush=True)
    progress = Progress(len(pending), stream)
    try:
        for row in scorer.rows(pending):
            journal.append(row)
            progress.advance(row)
    except KeyboardInterrupt:
        print(f"scan: stopped; {len(journal.paths)} rows are saved in {journal.path}: rerun the same command to continue", file=stream)
        raise
    finally:
        progress.close()
    missing = len(pending) - progress.done
    if missing:
        raise RuntimeError(f"{missing} files got no row; rerun the same command to score them")
    return ScanSummary(
        out=journal.path, rows=len(journal.paths), previous=journal.previous,
        scored=progress.done - progress.failed, failed=progress.failed, elapsed_s=time.monotonic() - progress.start,
        decisions=Counter(journal.decisions), errors=Counter(journal.errors),
        skipped=Counter(walk.skipped), unreadable_folders=list(walk.unreadable_folders),
    )
