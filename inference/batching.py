"""Dynamic batching: photos from concurrent requests share one onnxruntime call.

One model call on 16 photos costs far less than 16 calls on one photo (the per-call overhead and the
fan-out to onnxruntime's threads are paid once), so a single worker thread takes the first waiting
photo, gathers whatever else arrives within ``max_wait_s`` of it (at most ``max_batch`` photos), runs
them together and hands each caller its own row. Callers await a future, so the event loop never
runs the model. No HTTP in here: the app, the tests and any other caller use it the same way.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

RunBatch = Callable[[np.ndarray], Sequence[np.ndarray]]
# Told the size of every batch it runs and how long the call took, in seconds (for metrics).
BatchObserver = Callable[[int, float], None]


class BatcherClosed(RuntimeError):
    """A photo was submitted after shutdown began."""


@dataclass(frozen=True)
class BatchOutput:
    """One submitted input's share of a batched call."""

    rows: tuple[np.ndarray, ...]  # this input's row of each model output
    batch_size: int
    queue_s: float  # from submission until its model call started
    run_s: float  # the model call
    call: int  # which model call, counting from 1: inputs that shared one have the same number


@dataclass(frozen=True)
class _Item:
    tensor: np.ndarray
    future: Future
    submitted: float


class Batcher:
    """Owns a queue and one worker thread that runs ``run`` on stacked inputs."""

    def __init__(self, run: RunBatch, max_batch: int, max_wait_s: float, on_batch: BatchObserver | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, not {max_wait_s}")
        self._run = run
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        # None in the queue tells the worker to stop once everything submitted before it has run.
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        self._calls = 0  # only the worker thread counts
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="flexguard-batcher", daemon=True)
        self._worker.start()

    def submit_nowait(self, tensor: np.ndarray) -> Future:
        """Queue one input; the future resolves to its ``BatchOutput`` or the error of its batch."""
        future: Future = Future()
        with self._lock:  # so nothing is queued behind the stop marker
            if self._closed:
                raise BatcherClosed("the batcher is shut down")
            self._queue.put(_Item(tensor, future, time.perf_counter()))
        return future

    async def submit(self, tensor: np.ndarray) -> BatchOutput:
        return await asyncio.wrap_future(self.submit_nowait(tensor))

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse new inputs, finish the queued ones, and stop the worker thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._worker.join(timeout_s)

    def _work(self) -> None:
        stopping = False
        while not stopping:
            items, stopping = self._collect()
            # A caller that gave up (its request was cancelled) is dropped before the model runs.
            live = [item for item in items if item.future.set_running_or_notify_cancel()]
            if live:
                self._run_batch(live)

    def _collect(self) -> tuple[list[_Item], bool]:
        """Block for one input, then take what arrives until the batch is full or the first one has waited enough."""
        first = self._queue.get()
        if first is None:
            return [], True
        items = [first]
        # Measured from submission: inputs that queued while the previous batch ran have waited already.
        deadline = first.submitted + self._max_wait_s
        while len(items) < self._max_batch:
            remaining = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
        return items, False

    def _run_batch(self, items: list[_Item]) -> None:
        self._calls += 1
        start = time.perf_counter()
        try:
            outputs = self._run(np.stack([item.tensor for item in items]))
            run_s = time.perf_counter() - start
            if self._on_batch is not None:
                self._on_batch(len(items), run_s)
        except Exception as error:  # the callers get the error; the worker lives on for the next batch
            for item in items:
                item.future.set_exception(error)
            return
        for row, item in enumerate(items):
            shares = tuple(output[row] for output in outputs)
            item.future.set_result(BatchOutput(shares, len(items), start - item.submitted, run_s, self._calls))
