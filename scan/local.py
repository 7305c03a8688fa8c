"""Scoring on this machine: worker threads each read, decode and score their own small batches.

Why this shape, from profiling on the 2-core development machine (1440x1080 JPEGs; the numbers and the
variants tried are in docs/performance.md, "Scan benchmark"):

- The scan is bound by CPU, not by the GIL. A photo costs 4.8 core-ms to read, hash, decode and
  preprocess and 11.5 core-ms of model (one onnxruntime thread, batch 2): 16.3 core-ms, i.e. at most
  2 x 1000 / 16.3 = 123 photos/s on 2 cores, and the scan measures 98% of that. Decoding in worker
  processes instead of threads measured the same (119.8 against 120.0 files/s), and costs a model
  load, an engine's memory and pickled tensors per process, so the workers are threads: Pillow,
  hashlib, numpy and onnxruntime release the GIL for their heavy parts.
- Each worker runs the model itself, on one onnxruntime thread. All workers share one session
  (``InferenceSession.run`` is thread-safe and releases the GIL), so calls from different workers run
  side by side, one per core, instead of one call spread over the cores. Two such calls side by side
  do 166-168 images/s where one call on 2 threads does 151-156: a multi-threaded call leaves cores idle
  at its synchronisation points, and the old layout (decode threads feeding one 2-thread call) was
  left with GIL hand-offs and those idle gaps between its decoders and the model.
- The batches are small (``LOCAL_BATCH_SIZE`` in ``scan.ScanOptions``): on this CPU one onnxruntime
  thread does 11.0-11.5 core-ms per image at batch 2 and 13.2 at batch 8, whose activations no
  longer fit the core's cache; end to end, batch 2 scans 120 files/s and batch 8 103.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence

from flexguard.inference.engine import Engine

from .inflight import rows_in_order
from .rows import ModelIdentity, load, score_loaded

# Workers run their model calls side by side, so each call gets one onnxruntime thread: with
# ``workers`` set to the cores, calls and cores match one to one.
MODEL_THREADS_PER_CALL = 1


class LocalScorer:
    def __init__(self, model_path: str | os.PathLike, workers: int, batch_size: int):
        self.engine = Engine(model_path, threads=MODEL_THREADS_PER_CALL)
        self.model = ModelIdentity.from_info(self.engine.info)
        self.workers = workers
        self.batch_size = batch_size

    def _score(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """One worker's job: read and decode a batch, then score it in one model call."""
        return score_loaded(self.engine, [load(self.engine, path) for path in paths])

    def rows(self, paths: Iterable[str]) -> Iterator[dict[str, Any]]:
        """One row per path, in the order given, as soon as its batch is scored."""
        return rows_in_order(paths, self.batch_size, self.workers, self._score, "flexguard-scan")

    def close(self) -> None:
        """Nothing to release: the engine goes with the object."""
