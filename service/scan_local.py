"""Scoring on this machine: worker threads read and decode files, feeding batched inference on one engine.

Threads rather than processes: Pillow releases the GIL while it decodes and resizes, hashlib while it
hashes and onnxruntime while the model runs, so threads keep the cores busy without a second engine
(and its memory) in every process and without pickling tensors between processes.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterable, Iterator

from .engine import Engine
from .scan_rows import Loaded, ModelIdentity, load, score_loaded

# Files in flight beyond the batch being gathered: enough that every worker has one decoding and one
# queued while the model runs, and few enough that memory stays bounded (a prepared photo is ~0.8 MB)
# however many files the scan has.
QUEUED_PER_WORKER = 2


class LocalScorer:
    def __init__(self, model_path: str | os.PathLike, workers: int, batch_size: int):
        self.engine = Engine(model_path, threads=workers)
        self.model = ModelIdentity.from_info(self.engine.info)
        self.workers = workers
        self.batch_size = batch_size

    def rows(self, paths: Iterable[str]) -> Iterator[dict[str, Any]]:
        """One row per path, in the order given, as soon as its batch is scored."""
        remaining = iter(paths)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="flexguard-scan")
        waiting: deque[Future[Loaded]] = deque()
        try:
            for path in itertools.islice(remaining, self.batch_size + self.workers * QUEUED_PER_WORKER):
                waiting.append(pool.submit(load, self.engine, path))
            batch: list[Loaded] = []
            while waiting:
                batch.append(waiting.popleft().result())
                for path in itertools.islice(remaining, 1):
                    waiting.append(pool.submit(load, self.engine, path))
                if len(batch) == self.batch_size or not waiting:
                    yield from score_loaded(self.engine, batch)
                    batch = []
        finally:
            # On Ctrl-C or an error downstream: drop queued decodes, let the running ones finish.
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Nothing to release: the engine goes with the object."""
