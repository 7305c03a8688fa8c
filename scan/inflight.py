"""The scan's one in-flight batching loop: workers score batches of paths while rows stream out in order.

The local scorer (decode and model in each worker) and the server scorer (read and upload in each
worker) differ only in what a worker does with a batch; how batches are cut, how many are in flight
and how rows come back in input order is the same, so it is written once here.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

Row = dict[str, Any]
# Batches in flight per worker: one being scored and one queued, so a worker that finishes never waits
# for the main thread (busy writing rows) to hand it the next. Memory stays bounded however many files
# the scan has: workers x 2 batches (of prepared photos, ~0.8 MB each, or of file bytes being uploaded).
QUEUED_BATCHES_PER_WORKER = 2


def batches(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    """Successive lists of up to ``size`` paths."""
    remaining = iter(paths)
    while batch := list(itertools.islice(remaining, size)):
        yield batch


def rows_in_order(paths: Iterable[str], batch_size: int, workers: int,
                  score_batch: Callable[[Sequence[str]], list[Row]], thread_name: str) -> Iterator[Row]:
    """One row per path, in the order given, as soon as its batch is scored by ``workers`` threads."""
    pending = batches(paths, batch_size)
    pool = ThreadPoolExecutor(workers, thread_name_prefix=thread_name)
    waiting: deque[Future[list[Row]]] = deque()
    try:
        for batch in itertools.islice(pending, workers * QUEUED_BATCHES_PER_WORKER):
            waiting.append(pool.submit(score_batch, batch))
        while waiting:
            rows = waiting.popleft().result()
            # Hand out the next batch before yielding these rows, so no worker idles meanwhile.
            for batch in itertools.islice(pending, 1):
                waiting.append(pool.submit(score_batch, batch))
            yield from rows
    finally:
        # On Ctrl-C or an error downstream: drop queued batches, let the running ones finish (their
        # rows were never written, so a rerun scores them again).
        pool.shutdown(wait=True, cancel_futures=True)
